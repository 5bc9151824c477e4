"""Camera stills: when a still is due, and the worker that turns a raw main frame into one.

Stills are asked for by the interval (``still_interval_s``, in stream time), by
:meth:`Stills.snap` (the daemon's SIGUSR1 handler calls it: it only bumps a counter, which
is safe in a signal handler) and by the trigger file (polled; removing it is what claims
the request, so one touch gives one still). The worker runs on its own thread, so a 12 MP
still (full multi-scale search, redaction, encoding) never stalls the video; it is written
only when its own search and redaction succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeguard import codec
from edgeguard.camera.stats import Stats
from edgeguard.errors import DetectionError, OutputError, RedactionError
from edgeguard.geometry import Box, Region
from edgeguard.sinks.fileops import publish_bytes

logger = logging.getLogger(__name__)

TRIGGER_POLL_S = 0.25
STILL_PREFIX = "cam-"

OnOutput = Callable[[str, Path, int], None]  # (kind "still" | "video", path, frame index)


class Redactor(Protocol):
    """How a still is searched and redacted: the way the frames are."""

    cfg: Any  # the running Config ([redact], [output], [camera])
    pipe: Any  # the pipeline (its ``find``: the full search of a frame)

    def redact(self, rgb: np.ndarray, boxes: Sequence[Box],
               extra: Sequence[Region] = ()) -> None: ...

    def mask(self, rgb: np.ndarray) -> None: ...


@dataclasses.dataclass
class _Still:
    raw: np.ndarray  # the unredacted main frame: memory only, dropped after use
    cover: list[Box]
    index: int
    wall: float


def still_format(configured: str) -> str:
    """The still's format from ``output.format`` ("same" means JPEG for a camera)."""
    return "jpeg" if configured == "same" else configured


@dataclasses.dataclass(eq=False)
class Stills:
    """Still requests (interval, snap, trigger file) and the still worker thread."""

    outbox: Path
    redactor: Redactor
    stats: Stats
    depth: int  # raw frames waiting for the worker at most
    clock: Callable[[], float]
    wall: Callable[[], float]
    on_output: OnOutput | None

    def __post_init__(self) -> None:
        self._queue: queue.Queue[_Still | None] = queue.Queue(maxsize=self.depth)
        self._thread: threading.Thread | None = None
        self._requests = 0  # bumped by snap() (signal-safe), taken by the loop
        self._taken = 0
        self._next_interval: float | None = None
        self._interval_pending = False
        self._next_poll = 0.0
        self._trigger_warned = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="edgeguard-camera-stills",
                                        daemon=True)
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Finish the still in progress (until ``deadline``, time.monotonic)."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=max(0.1, deadline - time.monotonic()))
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def snap(self) -> None:
        """Ask for a still of the next frame. Safe to call from a signal handler."""
        self._requests += 1

    def poll_trigger(self) -> None:
        path = self.redactor.cfg.camera.trigger_file
        if not path:
            return
        now = self.clock()
        if now < self._next_poll:
            return
        self._next_poll = now + TRIGGER_POLL_S
        try:
            os.unlink(path)  # removing it claims the request: one touch, one still
        except FileNotFoundError:
            return
        except OSError as exc:
            if not self._trigger_warned:
                self._trigger_warned = True
                logger.warning("camera: trigger file %s cannot be removed (%s); ignored",
                               path, exc.strerror)
            return
        self.snap()

    def due(self, t: float) -> bool:
        """Whether the frame of stream time ``t`` should also become a still. A request
        stays pending until a frame is redacted successfully (:meth:`offer`)."""
        interval = self.redactor.cfg.camera.still_interval_s
        if interval > 0:
            if self._next_interval is None:
                self._next_interval = t + interval
            elif t >= self._next_interval:
                self._interval_pending = True
                # Stay on the grid; after a long gap start again from now.
                self._next_interval += interval
                if self._next_interval <= t:
                    self._next_interval = t + interval
        return self._interval_pending or self._requests != self._taken

    def offer(self, raw: np.ndarray, cover: list[Box], index: int) -> None:
        """A redacted frame's raw copy for the still that was due: the requests are met."""
        self._taken = self._requests
        self._interval_pending = False
        try:
            self._queue.put_nowait(_Still(raw, cover, index, self.wall()))
        except queue.Full:
            self.stats.still(skipped=True)
            logger.warning("camera: still skipped: the previous one is still being processed")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                path = self._write(item)
            except (DetectionError, RedactionError, OutputError, ValueError) as exc:
                self.stats.still(str(exc))
                logger.warning("camera: still of frame %d not written: %s", item.index, exc)
            except Exception as exc:  # the per-still boundary
                self.stats.still(f"internal error: {type(exc).__name__}")
                logger.exception("camera: internal error on a still")
            else:
                self.stats.still()
                if self.on_output is not None:
                    self.on_output("still", path, item.index)
            finally:
                del item

    def _write(self, item: _Still) -> Path:
        """The full search on the raw main frame, plus the tracker's boxes, redacted,
        encoded without metadata and published atomically."""
        r = self.redactor
        cfg = r.cfg
        t0 = time.perf_counter()
        _, found = r.pipe.find(item.raw)
        t1 = time.perf_counter()
        r.redact(item.raw, item.cover, found)
        r.mask(item.raw)
        fmt = still_format(cfg.output.format)
        # consume: the still's frame is not used again (no second 36 MB copy at 12 MP)
        data = codec.encode(item.raw, fmt, quality=cfg.output.jpeg_quality, consume=True)
        t2 = time.perf_counter()
        when = datetime.fromtimestamp(item.wall)
        stem = f"{STILL_PREFIX}{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}"
        path = publish_bytes(data, self.outbox, stem + codec.suffix_for(fmt))
        logger.info("camera: still %s: %d region(s) from the full search, %d tracked; "
                    "search %.0f ms, redact+encode %.0f ms", path.name, len(found),
                    len(item.cover), (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        return path
