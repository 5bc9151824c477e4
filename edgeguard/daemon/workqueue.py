"""The work queue between the inbox and the workers, and the pause while the outbox fails."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path


class WorkQueue:
    """Bounded FIFO of inbox paths, deduplicated against queued and in-flight ones.

    ``offer`` never blocks; when full it drops the hint and sets ``overflowed`` (the file
    is still in the inbox; the supervisor rescans once there is room). ``ask_rescan`` says
    the same of files the queue let go (an item blocked by the outbox, a rescan that found
    more than fitted).
    """

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Path] = collections.deque()
        self._seen: dict[Path, float] = {}  # queued or in flight -> when first offered
        self._in_flight: set[Path] = set()
        self._overflowed = False
        self._rescan = False
        self._closed = False

    def offer(self, path: Path) -> bool:
        with self._cond:
            if path in self._seen:
                return False
            if len(self._queue) >= self.capacity:
                self._overflowed = True
                return False
            self._queue.append(path)
            self._seen[path] = self._clock()
            self._cond.notify()
            return True

    def take(self, timeout: float) -> tuple[Path, float] | None:
        with self._cond:
            if not self._queue and not self._closed:
                self._cond.wait(timeout)
            if not self._queue or self._closed:
                return None
            path = self._queue.popleft()
            self._in_flight.add(path)
            return path, self._seen[path]

    def release(self, path: Path) -> None:
        with self._cond:
            self._in_flight.discard(path)
            self._seen.pop(path, None)

    def known(self, path: Path) -> bool:
        with self._cond:
            return path in self._seen

    def in_flight(self, path: Path) -> bool:
        with self._cond:
            return path in self._in_flight

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take_overflow(self) -> bool:
        """Whether hints were dropped since the last call (and reset the flag)."""
        with self._cond:
            flag, self._overflowed = self._overflowed, False
            return flag

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    def ask_rescan(self) -> None:
        self._rescan = True

    def rescan_started(self) -> None:
        """A rescan is about to look at the whole inbox: earlier wishes for one are met."""
        self._rescan = False
        self.take_overflow()

    def refill_due(self) -> bool:
        """A rescan is wanted and half the queue is free for what it finds."""
        return (self._rescan or self._overflowed) and self.room() * 2 >= self.capacity

    def room(self) -> int:
        with self._cond:
            return self.capacity - len(self._queue)

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return len(self._queue), len(self._in_flight)


class Control:
    """The one stop flag (SIGTERM and SIGINT alike) and the supervisor's wake-up call,
    shared by the daemon's threads."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def sleep(self, timeout: float) -> None:
        """Up to ``timeout``; a stop ends it early (a worker's pause)."""
        self._stop.wait(timeout)

    def wait_for_wake(self, timeout: float) -> None:
        """Up to ``timeout``; a wake-up or a stop ends it early (the supervisor's tick)."""
        self._wake.wait(timeout)
        self._wake.clear()


class Backoff:
    """Pauses all work while the outbox (or failed/) cannot be written.

    The first failure pauses for ``base_s``; each failure after a pause ends doubles it, up
    to ``cap_s``; a success resets it. Failures of items already in progress while paused
    do not extend the pause.
    """

    def __init__(self, *, cap_s: float, base_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap_s = cap_s
        self.base_s = base_s
        self._clock = clock
        self._lock = threading.Lock()
        self._delay = 0.0
        self._until = 0.0

    @property
    def failing(self) -> bool:
        return self._delay > 0.0

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    def failure(self) -> tuple[float, bool]:
        """Register a failure; returns (pause in seconds, whether this starts an outage)."""
        with self._lock:
            now = self._clock()
            first = self._delay == 0.0
            if now >= self._until:
                self._delay = self.base_s if first else min(self._delay * 2.0, self.cap_s)
                self._until = now + self._delay
            return self._until - now, first

    def success(self) -> bool:
        """Register a success; True when it ends an outage."""
        with self._lock:
            ended = self._delay > 0.0
            self._delay = 0.0
            self._until = 0.0
            return ended
