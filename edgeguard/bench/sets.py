"""Annotated image sets: finding them, reading them, taking samples of them.

A set is a folder with ``annotations.json`` (``{"images": [{"file", "width", "height",
"faces", "ignore"?}]}``, files relative to the folder) as described in
``../shared/data/faces/README.md``. The benchmark reads them; the product never does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeguard.errors import EdgeGuardError

ANNOTATIONS = "annotations.json"
# A set whose median image has at least this many pixels is treated as a "12 MP" set:
# sampled more sparsely by --quick and also timed through the full `edgeguard blur`.
LARGE_PIXELS = 8_000_000


class BenchSetError(EdgeGuardError):
    """An annotated set is missing or malformed."""


@dataclass(frozen=True)
class AnnotatedSet:
    name: str
    root: Path
    images: tuple[dict[str, Any], ...]  # annotation entries, in file order
    meta: dict[str, Any]  # the other top-level keys of annotations.json

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self.root / im["file"] for im in self.images)

    @property
    def faces(self) -> int:
        return sum(len(im["faces"]) for im in self.images)

    @property
    def median_pixels(self) -> int:
        px = sorted(int(im["width"]) * int(im["height"]) for im in self.images)
        return px[len(px) // 2] if px else 0

    @property
    def large(self) -> bool:
        return self.median_pixels >= LARGE_PIXELS

    def sample(self, n: int | None) -> AnnotatedSet:
        """The first ``n`` images (all when ``n`` is None)."""
        return self if n is None else replace(self, images=self.images[:n])

    def annotations(self) -> dict[str, Any]:
        """The annotations.json content for this (possibly sampled) set."""
        return {**self.meta, "images": list(self.images)}


def repo_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: this package) with pyproject.toml."""
    here = (start or Path(__file__)).resolve()
    for d in [here, *here.parents]:
        if (d / "pyproject.toml").is_file():
            return d
    return None


def default_sets_dir(root: Path | None = None) -> Path | None:
    """``../shared/data/faces`` next to the repository, or None outside a checkout."""
    root = root if root is not None else repo_root()
    return None if root is None else (root.parent / "shared" / "data" / "faces")


def default_tools_dir(root: Path | None = None) -> Path | None:
    """``../shared/tools`` next to the repository (the shared scorer and peer wrappers)."""
    root = root if root is not None else repo_root()
    return None if root is None else (root.parent / "shared" / "tools")


def find_sets(dirs: Iterable[Path], *,
              listdir: Callable[[Path], Iterable[Path]] = lambda p: p.iterdir()) -> list[Path]:
    """Folders holding an annotations.json: each dir itself, or its direct subfolders.

    Order: the order of ``dirs``, then subfolders by name; duplicates dropped.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        if (d / ANNOTATIONS).is_file():
            cands = [d]
        elif d.is_dir():
            cands = sorted(p for p in listdir(d) if (p / ANNOTATIONS).is_file())
        else:
            cands = []
        for c in cands:
            key = c.resolve()
            if key not in seen:
                seen.add(key)
                found.append(c)
    return found


def load_set(folder: Path) -> AnnotatedSet:
    path = folder / ANNOTATIONS
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchSetError(f"{path}: cannot read annotations ({exc})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise BenchSetError(f"{path}: no 'images' list")
    for i, im in enumerate(images):
        missing = [k for k in ("file", "width", "height", "faces") if k not in im]
        if missing:
            raise BenchSetError(f"{path}: images[{i}] lacks {', '.join(missing)}")
    meta = {k: v for k, v in data.items() if k != "images"}
    return AnnotatedSet(name=folder.name, root=folder, images=tuple(images), meta=meta)


def resolve_sets(extra: Sequence[Path], *, use_default: bool = True,
                 default_dir: Path | None = None) -> list[AnnotatedSet]:
    """The sets to measure: the default folder's sets (when present) plus ``extra``.

    Raises ``BenchSetError`` with a one-line reason when nothing is found.
    """
    dirs: list[Path] = []
    default_dir = default_dir if default_dir is not None else default_sets_dir()
    if use_default and default_dir is not None and default_dir.is_dir():
        dirs.append(default_dir)
    for e in extra:
        if not e.exists():
            raise BenchSetError(f"{e}: no such folder")
        dirs.append(e)
    folders = find_sets(dirs)
    if not folders:
        where = ", ".join(str(d) for d in dirs) or f"{default_dir} (absent)"
        raise BenchSetError(f"no annotated sets (folders with {ANNOTATIONS}) found in {where}; "
                            "pass --sets DIR")
    return [load_set(f) for f in folders]


def sample_size(s: AnnotatedSet, *, quick: bool, limit: int | None,
                quick_small: int = 20, quick_large: int = 3) -> int | None:
    """How many images of ``s`` to measure: ``limit``, or the --quick sample, or all."""
    if limit is not None:
        return limit
    if quick:
        return quick_large if s.large else quick_small
    return None


def same_basenames(s: AnnotatedSet) -> list[str]:
    """Basenames used by more than one image (results are keyed by basename)."""
    seen: dict[str, int] = {}
    for im in s.images:
        b = os.path.basename(im["file"])
        seen[b] = seen.get(b, 0) + 1
    return sorted(b for b, n in seen.items() if n > 1)
