"""What the one-shot commands share: config flags, input expansion, a progress line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from edgeguard import config
from edgeguard.config import Config

HIDDEN_OR_PARTIAL = (".part", ".tmp", "~")


def add_config_flags(p: argparse.ArgumentParser, *, redaction: bool = True) -> None:
    """The config file and the flags that override it; ``redaction=False`` leaves out the
    flags that only change pixels (`detect` prints no pixels, so they would change nothing)."""
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--profile", choices=config.PROFILES, help="search profile")
    p.add_argument("--threads", type=int, help="threads per TFLite interpreter")
    p.add_argument("--runtime", choices=config.RUNTIMES, help="TFLite runtime")
    p.add_argument("--min-score", type=float, help="minimum face score (0: profile's)")
    p.add_argument("--min-face", type=float,
                   help="smallest face in pixels to plan views for (0: profile's; a huge "
                        "value leaves only the whole-frame view)")
    p.add_argument("--models-dir", help="folder holding the .tflite models")
    if redaction:
        p.add_argument("--mode", choices=config.MODES, help="blur, pixelate or solid")
        p.add_argument("--shape", choices=config.SHAPES, help="ellipse or box")
        p.add_argument("--expand", type=float, help="region size relative to the face box")
        p.add_argument("--outline", action="store_true", default=None,
                       help="outline regions")
    else:
        p.add_argument("--expand", type=float,
                       help="region size relative to the face box (sets each face's "
                            "\"region\"; the redaction mode, shape and outline change only "
                            "pixels, so detect has no flags for them)")
    p.add_argument("--max-pixels", type=int, help="largest image accepted (pixels)")


def load_config(args: argparse.Namespace) -> Config:
    cfg = config.load(args.config)
    cfg = config.override(cfg, "detect", profile=args.profile, threads=args.threads,
                          runtime=args.runtime, min_score=args.min_score, min_face=args.min_face,
                          models_dir=args.models_dir)
    cfg = config.override(cfg, "redact", mode=getattr(args, "mode", None),
                          shape=getattr(args, "shape", None), expand=args.expand,
                          outline=getattr(args, "outline", None))
    return config.override(cfg, "input", max_pixels=args.max_pixels)


def expand_inputs(inputs: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its root) for each input; folders are walked, in order.

    Hidden and partial names inside folders are skipped (they are never finished images);
    a file named explicitly is always taken, and a missing one is reported by the caller.
    """
    for item in inputs:
        if item.is_dir():
            yield from _walk(item)
        else:
            yield item, Path(item.name)


def _walk(folder: Path) -> Iterator[tuple[Path, Path]]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.endswith(HIDDEN_OR_PARTIAL):
                continue
            path = Path(root) / name
            yield path, path.relative_to(folder)


@dataclass
class Inputs:
    """The command line's inputs, checked before any model is loaded."""

    items: list[tuple[Path, Path]] = field(default_factory=list)  # (file, relative path)
    missing: list[Path] = field(default_factory=list)
    empty: list[Path] = field(default_factory=list)  # folders with no file to take


def check_inputs(inputs: list[Path]) -> Inputs:
    """Walk the inputs once: the files to take, the paths that do not exist, and the
    folders that hold no file (hidden and partial names do not count)."""
    found = Inputs()
    for item in inputs:
        if item.is_dir():
            before = len(found.items)
            found.items.extend(_walk(item))
            if len(found.items) == before:
                found.empty.append(item)
        elif os.path.lexists(item):
            found.items.append((item, Path(item.name)))
        else:
            found.missing.append(item)
    return found


class Progress:
    """A one-line progress counter on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = total > 1 and stream.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total}")
            self.stream.flush()

    def message(self, line: str, *, to: TextIO | None = None) -> None:
        """``line`` on its own line (on ``to``, default the progress stream), the progress
        line cleared first."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
        out = self.stream if to is None else to
        out.write(line + "\n")
        out.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
