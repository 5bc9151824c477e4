"""What a new user sees from `edgeguard blur` and `detect --help` (issue 15), real CLI and model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}  # as tests/test_cli.py


def edgeguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeguard", *map(str, args)],
                          capture_output=True, text=True, env=ENV, check=False, timeout=300)


def _photos(tmp_path: Path, rgb: np.ndarray) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(rgb).save(d / "astronaut.jpg", quality=92)
    Image.fromarray(rgb[:, ::-1]).save(d / "sub" / "mirrored.png")
    Image.fromarray(rgb).save(d / "misnamed.jpg", "PNG")  # a PNG whose name says JPEG
    return d


def test_an_empty_folder_is_named_with_its_own_exit_code(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / ".cache").mkdir(parents=True)
    (empty / "photo.jpg.part").write_bytes(b"x")  # partial and hidden names are not taken
    (empty / ".photo.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    res = edgeguard("blur", empty, "-o", out)
    assert res.returncode == 3
    assert res.stderr == (f"{empty}: no images in this folder (hidden and partial names "
                          "are skipped)\n")
    assert not out.exists()


def test_a_missing_input_is_reported_before_the_models_load(tmp_path: Path) -> None:
    no_models = tmp_path / "no-models"
    no_models.mkdir()
    out = tmp_path / "out"
    res = edgeguard("blur", tmp_path / "missing.jpg", "-o", out, "--models-dir", no_models)
    # The models folder is empty: loading them first would have said so instead.
    assert res.returncode == 1
    assert res.stderr == f"{tmp_path / 'missing.jpg'}: file not found\n"
    assert res.stdout == "" and not out.exists()


def test_sidecar_from_the_config_file_is_written(tmp_path: Path,
                                                 astronaut_rgb: np.ndarray) -> None:
    src = _photos(tmp_path, astronaut_rgb)
    cfg = tmp_path / "edgeguard.toml"
    cfg.write_text("[output]\nsidecar = true\n[daemon]\ninbox = '/run/x/inbox'\n")
    out = tmp_path / "out"
    res = edgeguard("blur", "--config", cfg, src / "astronaut.jpg", "-o", out)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.jpg", "astronaut.jpg.json"]
    side = json.loads((out / "astronaut.jpg.json").read_text())
    # one face (found by both models: two regions, counted once); weak regions apart
    assert side["faces"] == 1 and len(side["regions"]) >= side["faces"] + side["weak"]
    assert len(side["weak_regions"]) == len(side["regions"])
    assert side["width"] == 512 and side["format"] == "jpeg" and side["profile"] == "balanced"


def _weak_flags(src: Path) -> list[bool]:
    res = edgeguard("detect", src)
    assert res.returncode == 0, res.stderr
    return [f["weak"] for f in json.loads(res.stdout)["faces"]]


def test_summary_gives_faces_and_weak_regions_in_total_and_per_file(
        tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    src = _photos(tmp_path, astronaut_rgb)
    out = tmp_path / "out"
    res = edgeguard("blur", "-v", src, "-o", out)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    per_file = {}
    for line in lines[:-1]:
        m = re.fullmatch(r"(\S+) -> (\S+): (\d+) faces?, (\d+) weak regions?", line)
        assert m, line
        per_file[Path(m[1]).name] = (int(m[3]), int(m[4]))
    assert set(per_file) == {"astronaut.jpg", "mirrored.png", "misnamed.jpg"}
    # One face (the astronaut, which both models find); weak regions are what `detect`
    # marks weak.
    weak_flags = _weak_flags(src / "astronaut.jpg")
    assert per_file["astronaut.jpg"][0] == 1
    assert per_file["astronaut.jpg"][1] <= sum(weak_flags)
    faces = sum(f for f, _ in per_file.values())
    weak = sum(w for _, w in per_file.values())
    assert faces == 3
    assert lines[-1] == (f"3 of 3 redacted into {out}: {faces} faces, {weak} weak region"
                         + ("" if weak == 1 else "s"))
    # Without -v only the total.
    quiet = edgeguard("blur", src / "astronaut.jpg", "-o", tmp_path / "o2")
    n, w = per_file["astronaut.jpg"]
    assert quiet.stdout == (f"1 of 1 redacted into {tmp_path / 'o2'}: {n} face, {w} weak "
                            f"region{'' if w == 1 else 's'}\n")


def test_skip_existing_redacts_only_what_is_new(tmp_path: Path,
                                                astronaut_rgb: np.ndarray) -> None:
    src = _photos(tmp_path, astronaut_rgb)
    out = tmp_path / "out"
    assert edgeguard("blur", src, "-o", out).returncode == 0
    first = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*"))
    assert first == ["astronaut.jpg", "misnamed.png", "sub/mirrored.png"]
    # By default a re-run never overwrites: the copies get the next free name.
    again = edgeguard("blur", src, "-o", out)
    assert again.returncode == 0
    assert (out / "astronaut-1.jpg").exists() and (out / "misnamed-1.png").exists()
    for p in out.rglob("*-1.*"):
        p.unlink()
    Image.fromarray(astronaut_rgb[:300]).save(src / "new.jpg")
    res = edgeguard("blur", "--skip-existing", "-v", src, "-o", out)
    assert res.returncode == 0, res.stderr
    assert f"{src / 'misnamed.jpg'}: skipped, {out / 'misnamed.png'} exists" in res.stdout
    assert res.stdout.splitlines()[-1].startswith(
        f"1 of 4 redacted into {out}, 3 skipped (output exists): ")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == sorted(
        [*first, "new.jpg"])
    help_text = edgeguard("blur", "--help").stdout
    assert "--skip-existing" in help_text and "never overwritten" in help_text


def test_detect_help_has_no_redaction_only_flags(tmp_path: Path,
                                                 astronaut_rgb: np.ndarray) -> None:
    res = edgeguard("detect", "--help")
    assert res.returncode == 0
    for flag in ("--mode", "--shape", "--outline"):
        assert f"[{flag} " not in res.stdout and f"[{flag}]" not in res.stdout
    assert "--expand" in res.stdout and '"region"' in res.stdout
    src = tmp_path / "a.png"
    Image.fromarray(astronaut_rgb).save(src)
    # Not taken as an abbreviation of --models-dir either.
    refused = edgeguard("detect", "--mode", "solid", src)
    assert refused.returncode == 2 and "unrecognized arguments: --mode" in refused.stderr


def test_float_tiff_nan_and_inf_have_a_defined_mapping_and_no_warning(
        tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    import tifffile

    grey = astronaut_rgb.mean(axis=2).astype(np.float32) / 255.0  # float data in [0, 1]
    grey[4:36, 4:36] = np.nan  # missing data
    grey[4:36, 476:508] = np.inf  # saturated
    grey[40:72, 4:36] = -np.inf
    src = tmp_path / "thermal.tif"
    Image.fromarray(grey, mode="F").save(src)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[output]\nsidecar = true\n")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "edgeguard", "blur", "--config", str(cfg),
                          str(src), "-o", str(out)], capture_output=True, text=True,
                         env={**ENV, "PYTHONWARNINGS": "error::RuntimeWarning"}, check=False,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr
    regions = json.loads((out / "thermal.tif.json").read_text())["regions"]
    assert regions and not [r for r in regions if r[0] < 36 and r[1] < 72]
    assert not [r for r in regions if r[2] > 476 and r[1] < 36]
    got = np.asarray(Image.open(out / "thermal.tif").convert("RGB")).astype(int)
    assert (got[4:36, 4:36] == 0).all()  # NaN: black
    assert (got[4:36, 476:508] == 255).all()  # +inf: white
    assert (got[40:72, 4:36] == 0).all()  # -inf: black
    # The rest keeps its own scale (the inf pixels do not flatten it).
    ref = np.rint(astronaut_rgb.mean(axis=2)[300:340, 200:240]).astype(int)
    assert np.abs(got[300:340, 200:240, 0] - ref).max() <= 1
    # A float TIFF Pillow has no mode for is refused as such, not called corrupt.
    f64 = tmp_path / "double.tif"
    tifffile.imwrite(f64, grey.astype(np.float64), photometric="minisblack")
    res = edgeguard("blur", f64, "-o", out)
    assert res.returncode == 1
    assert res.stderr == (f"{f64}: TIFF sample format is not supported (bits per sample or "
                          "sample type; a float TIFF must be one 32-bit channel)\n")
