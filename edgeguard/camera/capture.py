"""Reading the camera on its own thread into a short in-memory queue.

A live camera keeps a few buffers and overwrites them; a frame loop that takes one frame
at a time misses every frame that arrives while one search runs long (a sweep slice over
a busy region, a moment of CPU contention), even when the loop keeps up on average. The
reader thread takes every frame as it comes and queues up to ``depth`` of them (memory
only, like the bracket), so only a loop slower than the camera *on average* loses frames;
then the oldest queued frame gives way and the gap shows as ``missed``.

Errors and the end of the stream are queued behind the frames before them, so the loop
sees them in order.
"""

from __future__ import annotations

import collections
import logging
import threading

from edgeguard.camera.sources import Frame, Source

logger = logging.getLogger(__name__)


class Capture:
    """See the module docstring. ``block``: wait for room instead of dropping the oldest
    frame (an unpaced file, which has no real time to keep)."""

    def __init__(self, src: Source, *, depth: int, timeout: float, block: bool = False) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.src = src
        self.depth = depth
        self.timeout = timeout
        self.block = block
        self.dropped = 0
        self._queue: collections.deque[Frame | BaseException] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="edgeguard-camera-read",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading (the source stays open: its owner closes it). Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def get(self, timeout: float) -> Frame | None:
        """The oldest queued frame, or None after ``timeout``; raises what the source
        raised (EndOfStream, CameraError, ...) once the frames before it were taken."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._queue), timeout):
                return None
            item = self._queue.popleft()
            self._cond.notify_all()
        if isinstance(item, BaseException):
            raise item
        return item

    @property
    def queued(self) -> int:
        """Frames waiting for the loop."""
        return len(self._queue)

    def _put(self, item: Frame | BaseException) -> None:
        with self._cond:
            if isinstance(item, Frame):
                if self.block:
                    self._cond.wait_for(lambda: len(self._queue) < self.depth
                                        or self._stop.is_set())
                elif len(self._queue) >= self.depth:
                    self._queue.popleft()  # the loop is behind on average: the oldest goes
                    self.dropped += 1
            self._queue.append(item)
            self._cond.notify_all()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.src.read(self.timeout)
            except BaseException as exc:  # handed to the loop, which owns the error handling
                self._put(exc)
                return
            if frame is not None:
                self._put(frame)
