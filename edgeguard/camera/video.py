"""Redacted video segments in the outbox, published atomically, under a disk quota.

A segment is written through OpenCV's VideoWriter (FFmpeg backend) to a hidden name in the
outbox (``.edgeguard-<16 hex>.mp4``; the container comes from the extension, so it must
stay last), then, when the segment closes, fsync'ed and published as ``cam-<stamp>.mp4``
(:func:`edgeguard.sinks.fileops.publish`: a rename that never replaces a file, then the
folder fsync'ed): a reader sees a complete file or none. Hidden temporaries left by a crash
are removed by the daemon's sweep at its next start.

What this opencv-python-headless build can write (checked in the tests): ``mp4v``
(MPEG-4 part 2) in .mp4 and .mkv, ``MJPG`` in .mkv and .avi; no H.264 encoder (only
``h264_v4l2m2m``, which needs the Pi's hardware codec device). So .mp4 gets mp4v and .mkv
gets Motion JPEG (every frame a key frame: a segment cut short stays playable).

The timeline follows stream time, not the loop's speed: frame ``t`` goes to slot
``round((t - start) * fps)``; slots the loop skipped (a slow frame, a dropped frame) repeat
the previous written frame (itself already redacted, or black), so a segment plays at real
speed. Frames only ever come in redacted or black: this module never sees a raw frame.

After each segment the camera's videos (``cam-*.mp4|mkv``) are kept under the quota,
oldest (by modification time) removed first.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeguard.sinks.fileops import publish, remove_quietly, temp_path

logger = logging.getLogger(__name__)

PREFIX = "cam-"
FOURCC = {"mp4": "mp4v", "mkv": "MJPG"}
FINAL_RE = re.compile(r"^cam-\d{8}-\d{6}(-\d+)?\.(mp4|mkv)$")
# A gap longer than this many seconds is not filled frame by frame (a stalled camera must
# not make us write minutes of repeated frames); the segment just jumps.
MAX_FILL_S = 2.0


def stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall).strftime("%Y%m%d-%H%M%S")


def enforce_quota(folder: Path, quota_bytes: int) -> list[Path]:
    """Delete the oldest camera videos until their total is at most ``quota_bytes``."""
    files: list[tuple[float, int, Path]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for e in entries:
        if FINAL_RE.match(e.name) and e.is_file(follow_symlinks=False):
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, Path(e.path)))
    files.sort()
    total = sum(size for _, size, _ in files)
    removed: list[Path] = []
    for _, size, path in files:
        if total <= quota_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("video quota: cannot remove %s: %s", path.name, exc.strerror)
            continue
        total -= size
        removed.append(path)
    if removed:
        logger.info("video quota: removed %d oldest segment(s)", len(removed))
    return removed


def letterbox(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bgr`` scaled to fit ``size`` with its proportions kept, centred on black (a folder
    of images of several sizes played as a camera: one video size, no picture squashed)."""
    w, h = size
    ih, iw = bgr.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(bgr, (nw, nh), interpolation=interp)
    return out


class SegmentWriter:
    """Writes redacted RGB frames as segments of ``segment_s`` seconds; see the module doc."""

    def __init__(self, folder: Path, *, fps: float, size: tuple[int, int], fmt: str,
                 segment_s: float, quota_bytes: int,
                 wall: Callable[[], float] = time.time,
                 writer_factory: Callable[..., Any] | None = None,
                 fsync: Callable[[int], None] = os.fsync,
                 on_publish: Callable[[Path], None] | None = None) -> None:
        if fmt not in FOURCC:
            raise ValueError(f"video format {fmt!r}: expected one of {tuple(FOURCC)}")
        self.folder = Path(folder)
        self.fps = float(fps)
        self.size = size
        self.fmt = fmt
        self.segment_s = segment_s
        self.quota_bytes = quota_bytes
        self._wall = wall
        self._factory = writer_factory or cv2.VideoWriter
        self._fsync = fsync
        self._on_publish = on_publish
        self._writer: Any = None
        self._temp: Path | None = None
        self._stamp = ""
        self._start = 0.0
        self._slots = 0  # slots written in this segment
        self._last: np.ndarray | None = None  # the last BGR frame written (redacted or black)
        self.segments = 0  # published
        self.failures = 0
        self.last_error: str | None = None
        self._disabled_until = -1.0  # stream time; after a failure, retry at the next segment

    # -- public ------------------------------------------------------------------------------

    def write(self, rgb: np.ndarray, t: float) -> None:
        """Add a redacted (or black) frame at stream time ``t``."""
        self._frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), t)

    def blank(self, t: float) -> None:
        """Add a black frame at ``t`` (the failure policy ``blank``)."""
        w, h = self.size
        self._frame(np.zeros((h, w, 3), np.uint8), t)

    def close(self) -> Path | None:
        """Finish the open segment (publish it); returns its path. Idempotent."""
        return self._finish()

    # -- internals ---------------------------------------------------------------------------

    def _frame(self, bgr: np.ndarray, t: float) -> None:
        if (bgr.shape[1], bgr.shape[0]) != tuple(self.size):
            bgr = letterbox(bgr, self.size)
        if self._writer is not None and (t < self._start
                                         or t - self._start >= self.segment_s):
            self._finish()
        if self._writer is None:
            if t < self._disabled_until:
                return
            if not self._open(t):
                self._disabled_until = t + self.segment_s
                return
        slot = round((t - self._start) * self.fps)
        if slot < self._slots:
            return  # this slot already has a frame (frames come faster than fps)
        gap = slot - self._slots
        if gap > 0 and self._last is not None and gap <= MAX_FILL_S * self.fps:
            for _ in range(gap):
                self._writer.write(self._last)
        self._writer.write(bgr)
        self._slots = slot + 1
        self._last = bgr

    def _open(self, t: float) -> bool:
        self._stamp = stamp(self._wall())
        temp = temp_path(self.folder, f".{self.fmt}")
        try:
            writer = self._factory(str(temp), cv2.VideoWriter.fourcc(*FOURCC[self.fmt]),
                                   self.fps, tuple(self.size))
        except cv2.error as exc:
            writer = None
            reason = str(exc).strip().splitlines()[-1]
        else:
            reason = "the encoder could not be opened"
        if writer is None or not writer.isOpened():
            if writer is not None:
                writer.release()
            remove_quietly(temp)
            self.failures += 1
            self.last_error = f"video: cannot start a segment in {self.folder}: {reason}"
            logger.error("%s; video paused for %.0f s", self.last_error, self.segment_s)
            return False
        self._writer = writer
        self._temp = temp
        self._start = t
        self._slots = 0
        self._last = None
        return True

    def _finish(self) -> Path | None:
        writer, self._writer = self._writer, None
        temp, self._temp = self._temp, None
        if writer is None or temp is None:
            return None
        writer.release()
        if self._slots == 0:
            remove_quietly(temp)
            return None
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
            final = self._publish(temp)
        except OSError as exc:
            remove_quietly(temp)
            self.failures += 1
            self.last_error = f"video: cannot publish a segment: {exc.strerror or exc}"
            logger.error("%s", self.last_error)
            return None
        self.segments += 1
        logger.info("video segment %s: %d frames (%.0f s)", final.name, self._slots,
                    self._slots / self.fps)
        enforce_quota(self.folder, self.quota_bytes)
        if self._on_publish is not None:
            self._on_publish(final)
        return final

    def _publish(self, temp: Path) -> Path:
        return publish(temp, self.folder, f"{PREFIX}{self._stamp}.{self.fmt}")


class ThreadedWriter:
    """A :class:`SegmentWriter` on its own thread, so encoding overlaps the next frame's
    detection (OpenCV's encoder releases the GIL; a Pi has four cores). Frames handed over
    are owned by the writer from then on. A full queue makes the caller wait: the camera
    then skips frames, which the timeline fills. Idempotent close."""

    def __init__(self, inner: SegmentWriter, *, depth: int = 4) -> None:
        self.inner = inner
        self._q: queue.Queue[tuple[str, np.ndarray | None, float] | None] = queue.Queue(depth)
        self._thread = threading.Thread(target=self._work, name="edgeguard-camera-video",
                                        daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def segments(self) -> int:
        return self.inner.segments

    @property
    def failures(self) -> int:
        return self.inner.failures

    def write(self, rgb: np.ndarray, t: float) -> None:
        self._q.put(("frame", rgb, t))

    def blank(self, t: float) -> None:
        self._q.put(("blank", None, t))

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("video: the writer did not finish within %.0f s", timeout)

    def _work(self) -> None:
        try:
            while True:
                item = self._q.get()
                if item is None:
                    return
                kind, rgb, t = item
                if kind == "blank":
                    self.inner.blank(t)
                elif rgb is not None:
                    self.inner.write(rgb, t)
        except Exception:  # a bug here must not leave frames queued forever
            logger.exception("video: internal error; video stops")
            self.inner.failures += 1
            while self._q.get() is not None:
                pass
        finally:
            self.inner.close()
