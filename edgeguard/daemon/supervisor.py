"""The main thread's loop: when to rescan, prune failed/, write the state file, send
STATUS and WATCHDOG, and when to give up so systemd restarts the service.

:meth:`Supervisor.step` is one pass on the injected clock; :meth:`Supervisor.run` repeats
it every tick, or sooner when woken. What each step does is the :class:`Host`'s (the
daemon's); the supervisor only keeps the times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from edgeguard import service
from edgeguard.state import status_line

from .workers import TICK_S
from .workqueue import Control

logger = logging.getLogger(__name__)

# How often the supervisor removes old entries from failed/, and writes the state file.
PRUNE_EVERY_S = 60.0
STATE_EVERY_S = 1.0


class Host(Protocol):
    def housekeep(self) -> None:
        """Every tick: a requested reload, settled files to the queue, emptied folders."""

    def rescan_s(self) -> float: ...

    def paused(self) -> bool:
        """Whether all work waits for the outbox (no rescan meanwhile)."""

    def refill_due(self) -> bool: ...

    def rescan(self) -> None: ...

    def prune(self) -> None: ...

    def fault(self) -> str | None:
        """Why the service cannot go on (a thread died), or None."""

    def healthy(self, now: float) -> bool:
        """False while a worker is stuck: the watchdog pings stop."""

    def state_key(self) -> tuple[object, ...]:
        """What the state file shows; it is written again only when this changes."""

    def write_state(self, state: str) -> dict[str, object]: ...


class Supervisor:
    def __init__(self, host: Host, control: Control, *,
                 notify: service.Notify = service.notify, watchdog_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._host = host
        self._control = control
        self._notify = notify
        self._clock = clock
        # A ping every quarter of systemd's watchdog period, and a tick at least as often.
        self._ping_every = None if watchdog_s is None else watchdog_s / 4
        self.tick = TICK_S if self._ping_every is None else min(TICK_S, self._ping_every)
        now = clock()
        self._next_rescan = now + host.rescan_s()
        self._next_prune = now
        self._next_state = now + STATE_EVERY_S
        self._last_ping = -1e9
        self._last_status = ""
        self._last_key: tuple[object, ...] = ()

    def run(self) -> int:
        """Step until stopped (0) or until a step finds a fault (1)."""
        while not self._control.stopping:
            self._control.wait_for_wake(self.tick)
            if self._control.stopping:
                break
            code = self.step()
            if code is not None:
                return code
        return 0

    def step(self) -> int | None:
        """One pass; returns the exit code when the service must stop, else None."""
        host = self._host
        host.housekeep()
        now = self._clock()
        if not host.paused() and (now >= self._next_rescan or host.refill_due()):
            host.rescan()
            self._next_rescan = now + host.rescan_s()
        if now >= self._next_prune:
            host.prune()
            self._next_prune = now + PRUNE_EVERY_S
        fault = host.fault()
        if fault is not None:
            logger.error("%s; exiting so systemd restarts us", fault)
            return 1
        healthy = host.healthy(now)
        if (self._ping_every is not None and healthy
                and now - self._last_ping >= self._ping_every):
            self._notify("WATCHDOG=1")
            self._last_ping = now
        key = host.state_key()
        if now >= self._next_state and key != self._last_key:
            snap = host.write_state("running")
            self._last_key = key
            self._next_state = now + STATE_EVERY_S
            line = status_line(snap)
            if line != self._last_status:
                self._notify(f"STATUS={line}")
                self._last_status = line
        return None
