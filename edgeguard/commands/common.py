"""What the one-shot commands share: config flags, input expansion, a progress line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from edgeguard import config
from edgeguard.config import Config

HIDDEN_OR_PARTIAL = (".part", ".tmp", "~")


# Sections whose keys may be flags (see config._opt's ``flag``), in --help order.
_FLAG_SECTIONS = ("detect", "redact", "input")
_DETECT_EXPAND = (" (sets each face's \"region\"; the redaction mode, shape and outline "
                  "change only pixels, so detect has no flags for them)")


def _flag_fields(redaction: bool) -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """(section, field) of each config key the command takes as a flag; ``redaction=False``
    leaves out the keys that change only pixels."""
    for section in _FLAG_SECTIONS:
        for f in dataclasses.fields(config.SECTIONS[section]):
            if f.metadata["flag"] and (redaction or not f.metadata["pixels"]):
                yield section, f


def add_config_flags(p: argparse.ArgumentParser, *, redaction: bool = True) -> None:
    """The config file and the flags that override it, made from the config's keys;
    ``redaction=False`` leaves out the flags that only change pixels (`detect` prints no
    pixels, so they would change nothing)."""
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    hints = {name: typing.get_type_hints(cls) for name, cls in config.SECTIONS.items()
             if name in _FLAG_SECTIONS}
    for section, f in _flag_fields(redaction):
        name = "--" + f.name.replace("_", "-")
        text = f.metadata["flag"]
        if section == "redact" and f.name == "expand" and not redaction:
            text += _DETECT_EXPAND
        hint = hints[section][f.name]
        if hint is bool:
            p.add_argument(name, action="store_true", default=None, help=text)
        elif f.metadata["choices"]:
            p.add_argument(name, choices=[str(c) for c in f.metadata["choices"]], help=text)
        elif hint is str:
            p.add_argument(name, help=text)
        else:
            p.add_argument(name, type=hint, help=text)  # int or float


def load_config(args: argparse.Namespace) -> Config:
    """The config file with the flags given (those not None) applied."""
    cfg = config.load(args.config)
    for section in _FLAG_SECTIONS:
        cfg = config.override(cfg, section, **{
            f.name: getattr(args, f.name, None) for s, f in _flag_fields(True) if s == section})
    return cfg


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
