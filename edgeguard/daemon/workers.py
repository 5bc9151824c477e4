"""The worker threads: each takes a path from the queue and hands it to the item handler.

The processor (one shared :class:`~edgeguard.pipeline.Pipeline`) releases the GIL in
decode, inference and encode, so two workers keep two cores busy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .items import ItemOutcome
from .workqueue import Backoff, Control, WorkQueue

# How long an idle worker waits for the queue (or a pause) before it looks at the stop flag.
TICK_S = 0.5

Handle = Callable[[Path, float, Callable[[], None]], ItemOutcome]


@dataclasses.dataclass
class Slot:
    """What one worker is doing: (path, since) while busy, None while idle."""

    thread: threading.Thread | None = None
    current: tuple[Path, float] | None = None


class WorkerPool:
    """``handle`` runs in each worker until ``control`` stops them."""

    def __init__(self, queue: WorkQueue, backoff: Backoff, handle: Handle, *,
                 control: Control, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots: list[Slot] = []
        self.queue = queue
        self.backoff = backoff
        self._handle = handle
        self._control = control
        self._clock = clock

    def start(self, count: int) -> None:
        for i in range(count):
            slot = Slot()
            slot.thread = threading.Thread(target=self._loop, args=(slot,),
                                           name=f"edgeguard-worker-{i}", daemon=True)
            self.slots.append(slot)
            slot.thread.start()

    def _loop(self, slot: Slot) -> None:
        while not self._control.stopping:
            pause = self.backoff.remaining()
            if pause > 0:
                self._control.sleep(min(pause, TICK_S))
                continue
            got = self.queue.take(timeout=TICK_S)
            if got is None:
                continue
            path, seen = got
            slot.current = (path, self._clock())

            def touch(path: Path = path) -> None:
                slot.current = (path, self._clock())

            try:
                self._handle(path, seen, touch)
            finally:
                slot.current = None
                self.queue.release(path)
            if self.queue.refill_due():
                self._control.wake()  # refill from the inbox now, not at the next tick

    def stuck(self, now: float, stuck_s: float) -> tuple[Path, float] | None:
        """The item a worker has been on longest, if that is over ``stuck_s``."""
        worst: tuple[Path, float] | None = None
        for slot in self.slots:
            cur = slot.current
            if cur is not None and now - cur[1] > stuck_s and (
                    worst is None or cur[1] < worst[1]):
                worst = cur
        return worst

    def dead(self) -> bool:
        return any(s.thread is not None and not s.thread.is_alive() for s in self.slots)

    def busy(self) -> int:
        return sum(1 for s in self.slots if s.current is not None)

    def join(self, deadline: float) -> int:
        """Wait for the workers until ``deadline``; returns how many are still running."""
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - self._clock()))
        return sum(1 for s in self.slots if s.thread is not None and s.thread.is_alive())
