"""The typed config: TOML in, frozen dataclasses out, every mistake named."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from edgeguard import config
from edgeguard.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edgeguard.toml"
    p.write_text(text)
    return p


def test_defaults_without_a_file() -> None:
    cfg = config.load(None)
    assert cfg.detect.profile == "balanced"
    assert cfg.redact.expand == 1.3 and cfg.redact.mode == "blur"
    assert cfg.output.jpeg_quality == 90 and cfg.output.keep_exif == ()
    assert cfg.input.max_pixels == 64_000_000


def test_file_values_are_typed_and_frozen(tmp_path: Path) -> None:
    p = _write(tmp_path, '[redact]\nmode = "pixelate"\nexpand = 2\ncolor = [255, 0, 0]\n'
                         '[output]\nkeep_exif = ["DateTimeOriginal"]\n')
    cfg = config.load(p)
    assert cfg.redact.mode == "pixelate"
    assert cfg.redact.expand == 2.0 and isinstance(cfg.redact.expand, float)
    assert cfg.redact.color == (255, 0, 0)
    assert cfg.output.keep_exif == ("DateTimeOriginal",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.redact.mode = "solid"  # type: ignore[misc]


@pytest.mark.parametrize(("text", "message"), [
    ("[redact]\nmoed = 'blur'\n",
     r"edgeguard.toml: unknown key redact.moed \(did you mean redact.mode\?\)$"),
    ("[detect]\nmode = 'blur'\n", r"unknown key detect.mode \(did you mean redact.mode\?\)$"),
    ("[redact]\nzzz = 1\n", r"unknown key redact.zzz$"),
    ("[nope]\n", r"unknown section \[nope\]$"),
    ("[detetc]\n", r"unknown section \[detetc\] \(did you mean \[detect\]\?\)$"),
    ("[redact]\nexpand = 0.5\n", r"redact.expand: 0.5 is below the minimum 1.0"),
    ("[redact]\nmode = 'smudge'\n", r"redact.mode: 'smudge' is not one of blur, pixelate, solid"),
    ("[output]\njpeg_quality = 'high'\n", r"output.jpeg_quality: expected a whole number"),
    ("[output]\njpeg_quality = 101\n", r"above the maximum 100"),
    ("[redact]\noutline = 1\n", r"redact.outline: expected true or false"),
    ("[redact]\ncolor = [1, 2]\n", r"redact.color: expected 3 values"),
    ("[redact]\ncolor = [1, 2, 300]\n", r"colour values must be 0-255"),
    ("redact = 3\n", r"\[redact\] must be a table"),
    ("[redact\n", r"not valid TOML"),
])
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(_write(tmp_path, text))


def test_every_mistake_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    # What `edgeguard check` and every other command prints: one line, all the mistakes.
    p = _write(tmp_path, '[detect]\nprofle = "fast"\n[redact]\nexpand = 9\ncolor = [1, 2]\n'
                         '[camera]\nsource = "bogus"\n[web]\nlisen = "0.0.0.0"\n')
    res = subprocess.run([sys.executable, "-m", "edgeguard", "check", "--config", str(p)],
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stdout.splitlines()[0] == (
        f"FAIL config: {p}: 5 errors: unknown key detect.profle (did you mean "
        "detect.profile?); redact.expand: 9.0 is above the maximum 3.0; redact.color: "
        "expected 3 values, got 2; camera.source: 'bogus' is not none, auto, "
        "picamera2[:N], v4l2:N or file:PATH; unknown key web.lisen (did you mean web.listen?)")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "absent.toml")


def test_override_validates_and_skips_none() -> None:
    cfg = config.override(config.Config(), "redact", mode="solid", shape=None)
    assert cfg.redact.mode == "solid" and cfg.redact.shape == "ellipse"
    with pytest.raises(ConfigError, match=r"command line: redact\.expand"):
        config.override(cfg, "redact", expand=9.0)


def test_reference_lists_every_key() -> None:
    ref = config.reference()
    for name, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"`{name}.{f.name}`" in ref


def test_flags_come_from_the_config_keys_and_override_the_file(tmp_path: Path) -> None:
    from edgeguard.cli import build_parser
    from edgeguard.commands.common import load_config

    flagged = {f.name.replace("_", "-"): bool(f.metadata["pixels"])
               for s in ("detect", "redact", "input")
               for f in dataclasses.fields(config.SECTIONS[s]) if f.metadata["flag"]}
    assert set(flagged) == {"profile", "threads", "runtime", "min-score", "min-face",
                            "models-dir", "mode", "shape", "expand", "outline", "max-pixels"}
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, pixels_too in (("blur", True), ("detect", False)):
        options = set(sub.choices[command]._option_string_actions)
        assert {f"--{n}" for n, pixels in flagged.items() if pixels_too or not pixels} <= options
        assert pixels_too or not {f"--{n}" for n, pixels in flagged.items() if pixels} & options
    path = _write(tmp_path, '[detect]\nthreads = 3\nprofile = "fast"\n[redact]\nmode = "solid"\n')
    args = parser.parse_args(["blur", "-o", str(tmp_path), "--config", str(path), "--threads",
                              "4", "--shape", "box", "--outline", "--max-pixels", "10", "x.jpg"])
    cfg = load_config(args)
    assert (cfg.detect.threads, cfg.detect.profile, cfg.redact.mode, cfg.redact.shape,
            cfg.redact.outline, cfg.input.max_pixels) == (4, "fast", "solid", "box", True, 10)


def test_camera_errors_name_the_file_and_come_all_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "[camera]\nmain_size = [640, 480]\nlores_size = [1280, 721]\n"
                            "masks = [[[0, 0], [5, 5]]]\n")
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value) == (
        f"{path}: 3 errors: camera.lores_size: 1280x721 must be even numbers, 16-16384; "
        "camera.masks[0]: a polygon needs at least 3 points, got 2; "
        "camera.lores_size must not be larger than camera.main_size")
