"""A video as one item: what the daemon and `edgeguard blur` call.

:func:`write_new_video` creates the (hidden, temporary) output file itself, exclusively and
without following links, writes the redacted video into it through PyAV and fsyncs it; the
caller publishes it by renaming (the daemon through its outbox and journal, so a crash at
any point leaves no output and the input in the inbox, redone from the start). The raw
video is only ever read where it lies (the tmpfs inbox); no raw frame is written anywhere.

:class:`Meter` turns per-frame calls into what `edgeguard status` shows: frames done of
the total, frames per second and the time left.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeguard.sinks.fileops import fill_new
from edgeguard.video import SNIFF_BYTES, sniff
from edgeguard.video.transcode import FrameFinder, Progress, VideoResult, redact_video


class Cancelled(Exception):
    """Raised from a progress callback to stop a video (the daemon is stopping)."""


def kind_of_fd(fd: int) -> str | None:
    """The video container an open file holds (from its first bytes), or None."""
    return sniff(os.pread(fd, SNIFF_BYTES, 0))


def kind_of_path(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(SNIFF_BYTES))
    except OSError:
        return None  # the image path reports the file's problem in its own words


def write_new_video(src: Path, dst: Path, *, kind: str, search: FrameFinder,
                    progress: Progress, mode: int = 0o644) -> VideoResult:
    """Create ``dst`` (which must not exist), write the redacted video, fsync it.

    On any error the partial file is removed and the error raised.
    """
    return fill_new(dst, lambda fh: redact_video(src, fh, kind=kind, search=search,
                                                 progress=progress), mode=mode)


@dataclass
class Meter:
    """Progress of one video: frames done of the total, the rate, the time left."""

    name: str
    total: int | None = None
    done: int = 0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._lock = threading.Lock()

    def update(self, done: int, total: int | None) -> None:
        with self._lock:
            self.done, self.total = done, total

    @property
    def fps(self) -> float:
        elapsed = self.clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        fps = self.fps
        if self.total is None or fps <= 0:
            return None
        return max(0.0, (self.total - self.done) / fps)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            eta = self.eta_s
            return {"name": self.name, "frames_done": self.done, "frames_total": self.total,
                    "fps": round(self.fps, 2), "eta_s": None if eta is None else round(eta, 1)}


def describe(snap: dict[str, Any]) -> str:
    """One line for `edgeguard status` and `blur`: "NAME: 120/450 frames, 8.1 fps, ETA 41 s"."""
    total = snap.get("frames_total")
    done = snap.get("frames_done", 0)
    frames = f"{done}/{total}" if total else f"{done}"
    eta = snap.get("eta_s")
    tail = f", ETA {_eta(eta)}" if eta is not None else ""
    return f"{snap.get('name')}: {frames} frames, {snap.get('fps', 0):.1f} fps{tail}"


def _eta(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"
