"""What the one-shot commands share: config flags, input expansion, a progress line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from edgeguard import config
from edgeguard.config import Config

HIDDEN_OR_PARTIAL = (".part", ".tmp", "~")


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--profile", choices=config.PROFILES, help="search profile")
    p.add_argument("--threads", type=int, help="threads per TFLite interpreter")
    p.add_argument("--runtime", choices=config.RUNTIMES, help="TFLite runtime")
    p.add_argument("--min-score", type=float, help="minimum face score (0: profile's)")
    p.add_argument("--min-face", type=float,
                   help="smallest face in pixels to plan views for (0: profile's; a huge "
                        "value leaves only the whole-frame view)")
    p.add_argument("--models-dir", help="folder holding the .tflite models")
    p.add_argument("--mode", choices=config.MODES, help="blur, pixelate or solid")
    p.add_argument("--shape", choices=config.SHAPES, help="ellipse or box")
    p.add_argument("--expand", type=float, help="region size relative to the face box")
    p.add_argument("--outline", action="store_true", default=None, help="outline regions")
    p.add_argument("--max-pixels", type=int, help="largest image accepted (pixels)")


def load_config(args: argparse.Namespace) -> Config:
    cfg = config.load(args.config)
    cfg = config.override(cfg, "detect", profile=args.profile, threads=args.threads,
                          runtime=args.runtime, min_score=args.min_score, min_face=args.min_face,
                          models_dir=args.models_dir)
    cfg = config.override(cfg, "redact", mode=args.mode, shape=args.shape,
                          expand=args.expand, outline=args.outline)
    return config.override(cfg, "input", max_pixels=args.max_pixels)


def expand_inputs(inputs: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its root) for each input; folders are walked, in order.

    Hidden and partial names inside folders are skipped (they are never finished images);
    a file named explicitly is always taken, and a missing one is reported by the caller.
    """
    for item in inputs:
        if item.is_dir():
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or name.endswith(HIDDEN_OR_PARTIAL):
                        continue
                    path = Path(root) / name
                    yield path, path.relative_to(item)
        else:
            yield item, Path(item.name)


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

    def message(self, line: str) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
