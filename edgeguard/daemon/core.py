"""The daemon itself: builds the pieces, runs the lifecycle (lock, recover, start, supervise,
drain) and answers the supervisor's questions. See :mod:`edgeguard.daemon` for the threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from edgeguard import __version__, service
from edgeguard.config import Config
from edgeguard.errors import EdgeGuardError
from edgeguard.lognames import Namer
from edgeguard.sinks.attempts import Attempts
from edgeguard.sinks.failed import FailedSink
from edgeguard.sinks.journal import Journal
from edgeguard.sinks.outbox import Checkpoint, Outbox, no_checkpoint
from edgeguard.sources import inbox, spool
from edgeguard.startup import Paths
from edgeguard.state import Stats, status_line, write_state

from .ends import Endings
from .intake import Intake
from .items import ItemHandler, Processor
from .lockfile import LockFile
from .reload import plan_reload
from .supervisor import Supervisor
from .workers import WorkerPool
from .workqueue import Backoff, Control, WorkQueue

logger = logging.getLogger(__name__)


class Companion(Protocol):
    """Runs beside the inbox (the camera): started once the daemon holds its lock, stopped
    in the drain, reported in the state file under ``camera``."""

    @property
    def failed(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, object]: ...

    def apply(self, cfg: Config, pipe: object = None) -> None: ...


def quiet_watchdog_library() -> None:
    """watchdog logs every inotify event, with its path, at DEBUG: never let those through
    (names may be hidden, now or after a reload). Set once, at start-up."""
    logging.getLogger("watchdog").setLevel(logging.WARNING)


class Daemon:
    """The watched-inbox daemon. Build it, then call :meth:`run` from the main thread."""

    def __init__(self, cfg: Config, paths: Paths, processor: Processor, *,
                 load_config: Callable[[], Config] | None = None,
                 notify: service.Notify = service.notify,
                 watchdog_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 checkpoint: Checkpoint = no_checkpoint,
                 camera: Companion | None = None) -> None:
        self.cfg = cfg
        self.camera = camera
        self.paths = paths
        self.control = Control()  # the stop (SIGTERM and SIGINT alike) and the wake-up call
        self._load_config = load_config
        self._notify = notify
        self._watchdog_s = watchdog_s
        self._clock = clock
        d = cfg.daemon
        self.stats = Stats(clock=clock)
        self.queue = WorkQueue(d.queue_size, clock=clock)
        self.settler = inbox.Settler(d.stable_s, clock=clock)
        self.backoff = Backoff(cap_s=d.retry_max_s, clock=clock)
        self.journal = Journal(paths.journal, reserve=paths.reserve)
        self.attempts = Attempts(paths.runtime / "attempts", d.max_attempts)
        self.outbox = Outbox(paths.outbox, self.journal, checkpoint=checkpoint)
        self.failed = FailedSink(paths.failed, max_count=d.failed_max_count,
                                 max_age_s=d.failed_max_age_s)
        # Arrivals are claimed from the shared inbox into the private spool at once; the
        # spool is the queue the workers take from (see edgeguard.sources.spool).
        self.root = paths.spool
        self.claimer = spool.Claimer(paths.inbox, paths.spool, stable_s=d.stable_s,
                                     hide_names=d.hide_filenames)
        self.intake = Intake(self.root, self.queue, self.settler, self.claimer)
        self.watcher = inbox.InboxWatcher(self.root, ready=self.intake.hint,
                                          settler=self.settler)
        self.namer = Namer(self.root, paths.outbox, hide=d.hide_filenames)
        self.ends = Endings(root=self.root, namer=self.namer, outbox=self.outbox,
                            failed=self.failed, stats=self.stats, queue=self.queue,
                            backoff=self.backoff, wake=self.control.wake, notify=notify)
        self.items = ItemHandler(cfg, processor, self.ends, attempts=self.attempts,
                                 settler=self.settler, control=self.control, clock=clock)
        self.workers = WorkerPool(self.queue, self.backoff, self.items.handle,
                                  control=self.control, clock=clock)
        self._reload_requested = False
        self._stuck_logged = False
        self._state_failing = False
        self.clean_exit = True

    # -- control (signal handlers call these) --------------------------------------------

    def stop(self) -> None:
        self.control.stop()

    def request_reload(self) -> None:
        self._reload_requested = True
        self.control.wake()

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Recover, scan, serve until stopped; returns the exit code."""
        with LockFile(self.paths.lock, runtime=self.paths.runtime):
            return self._run()

    def open(self) -> None:
        """Everything before serving: the journal, interrupted deliveries, the spool."""
        quiet_watchdog_library()
        self.journal.open()
        self.attempts.open()
        finished = self.outbox.recover()
        if finished:
            logger.warning("journal: %d interrupted deliveries finished", len(finished))
        # Published, but the input could not be deleted: never redo those.
        self.ends.delivered |= self.outbox.undeletable
        swept = self.outbox.sweep_temporaries()
        if swept:
            logger.warning("outbox: removed %d unfinished temporary files", swept)
        with contextlib.suppress(FileExistsError):  # checked by startup.check_spool
            os.mkdir(self.root, spool.SPOOL_MODE)

    def _run(self) -> int:
        self.open()
        if self.camera is not None:
            self.camera.start()  # StartupError when camera.require finds no camera
        self.watcher.start()  # before the scan: nothing that lands meanwhile is missed
        try:
            self.claimer.start()
            self.intake.rescan()
            self.workers.start(self.cfg.daemon.workers)
            snap = self.write_state("running")
            self._notify(f"READY=1\nSTATUS={status_line(snap)}")
            logger.info("ready: drop images into %s; redacted copies appear in %s; "
                        "failed inputs move to %s", self.paths.inbox, self.paths.outbox,
                        self.paths.failed)
            code = Supervisor(self, self.control, notify=self._notify,
                              watchdog_s=self._watchdog_s, clock=self._clock).run()
        finally:
            self.claimer.close()
            self.watcher.close()
        return self._drain(code)

    def _drain(self, code: int) -> int:
        self.control.stop()
        self.queue.close()
        self._notify("STOPPING=1")
        self.write_state("stopping")
        if self.camera is not None:
            self.camera.stop()  # finishes the open video segment and a still in progress
        drain_s = self.cfg.daemon.drain_s
        busy = self.workers.busy()
        if busy:
            logger.info("stopping: finishing %d image(s) in progress", busy)
        left = self.workers.join(self._clock() + drain_s)
        if left:
            logger.error("stopping: %d image(s) still in progress after %.0f s; exiting "
                         "anyway (their inputs stay queued for the next start)", left, drain_s)
            self.clean_exit = False
            code = code or 1
        self.write_state("stopped")
        snap = self.stats.snapshot()
        logger.info("stopped: %d processed, %d failed", int(snap["processed"]),
                    int(snap["failed"]))
        return code

    # -- what the supervisor asks (see supervisor.Host) -------------------------------------

    def housekeep(self) -> None:
        if self._reload_requested:
            self._reload()
        for path in self.settler.due():
            self.intake.hint(path)
        self.claimer.tidy()  # emptied folders, without waiting for the next rescan

    def rescan_s(self) -> float:
        return self.cfg.daemon.rescan_s

    def paused(self) -> bool:
        return self.backoff.remaining() > 0

    def refill_due(self) -> bool:
        return self.queue.refill_due()

    def rescan(self) -> None:
        self.intake.rescan()

    def prune(self) -> None:
        self.failed.prune()

    def fault(self) -> str | None:
        if not self.watcher.alive() or not self.claimer.alive():
            return "the inbox watcher stopped"
        if self.workers.dead():
            return "a worker thread died"
        if self.camera is not None and self.camera.failed and self.cfg.camera.require:
            return f"the required camera failed ({self.camera.status().get('last_error')})"
        return None

    def healthy(self, now: float) -> bool:
        stuck = self.workers.stuck(now, self.cfg.daemon.stuck_s)
        if stuck is not None:
            if not self._stuck_logged:
                logger.error("a worker has been stuck on %s for %.0f s; watchdog pings stop "
                             "so systemd restarts the service", self.namer.name(stuck[0]),
                             now - stuck[1])
                self._stuck_logged = True
            return False
        self._stuck_logged = False
        return True

    def state_key(self) -> tuple[object, ...]:
        cam = self.camera.status() if self.camera is not None else {}
        return (self.stats.version, self.queue.counts(), len(self.settler),
                self.backoff.failing, cam.get("frames"), cam.get("stills"), cam.get("state"),
                tuple(m.done for m in list(self.items.videos.values())))

    def write_state(self, state: str) -> dict[str, object]:
        queued, in_flight = self.queue.counts()
        snap = self.stats.snapshot(
            state=state,
            queued=queued + len(self.settler),
            in_flight=in_flight,
            backlog=self.intake.backlog,
            outbox_blocked=self.backoff.failing,
            inbox=str(self.paths.inbox),
            outbox=str(self.paths.outbox),
            failed_dir=str(self.paths.failed),
            config=self.cfg.source,
            version=__version__,
            **({"camera": self.camera.status()} if self.camera is not None else {}),
            videos=[m.snapshot() for m in list(self.items.videos.values())],
        )
        try:
            write_state(self.paths.runtime, snap)
        except OSError as exc:
            if not self._state_failing:  # once per outage: a full tmpfs lasts
                logger.warning("cannot write the state file: %s", exc.strerror)
            self._state_failing = True
        else:
            self._state_failing = False
        return snap

    # -- reload ------------------------------------------------------------------------------

    def _reload(self) -> None:
        self._reload_requested = False
        mono_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={mono_us}")
        try:
            self._apply_reload()
        finally:
            self._notify("READY=1")

    def _apply_reload(self) -> None:
        if self._load_config is None:
            logger.warning("reload: started without a config file; nothing to reload")
            return
        try:
            new = self._load_config()
        except EdgeGuardError as exc:
            logger.error("reload: %s; keeping the running configuration", exc)
            self.stats.error(f"reload: {exc}")
            return
        plan = plan_reload(self.cfg, new)
        if plan.kept:
            logger.warning("reload: %s need a restart; keeping the running values",
                           ", ".join(f"daemon.{k}" for _, k, _, _ in plan.kept))
        if not plan.applied:
            logger.info("reload: %s: no changes to apply", new.source)
            self.cfg = dataclasses.replace(self.cfg, source=new.source)
            self.items.configure(self.cfg, self.items.processor)
            return
        new = plan.cfg
        processor = self.items.processor
        if plan.rebuilds_processor:
            try:
                processor = processor.with_config(new)
            except EdgeGuardError as exc:
                logger.error("reload: %s; keeping the running configuration", exc)
                self.stats.error(f"reload: {exc}")
                return
        self.cfg = new
        self.items.configure(new, processor)
        if self.camera is not None:
            self.camera.apply(new, processor)
        d = new.daemon
        self.namer.hide = d.hide_filenames
        self.settler.stable_s = d.stable_s
        self.claimer.stable_s = d.stable_s
        self.claimer.hide_names = d.hide_filenames
        self.backoff.cap_s = d.retry_max_s
        self.failed.max_count = d.failed_max_count
        self.failed.max_age_s = d.failed_max_age_s
        logger.info("reload: applied %s", "; ".join(f"{s}.{k}: {a!r} -> {b!r}"
                                                     for s, k, a, b in plan.applied))
