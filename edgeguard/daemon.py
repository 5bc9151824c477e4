"""The daemon: a bounded queue of inbox paths, a worker pool and a supervising loop.

Threads:

- watchdog's observer thread turns inotify events into :meth:`WorkQueue.offer` calls
  (never blocking: when the queue is full the hint is dropped and the file waits in the
  inbox, which is the real queue, until a rescan finds it) and :class:`Settler` updates;
- ``workers`` threads take a path each and run it through :meth:`Daemon._item`, the one
  per-item error boundary; the processor (one shared :class:`~edgeguard.pipeline.Pipeline`)
  releases the GIL in decode, inference and encode, so two workers keep two cores busy;
- the main thread supervises: settled files, periodic and refill rescans, pruning failed/,
  the state file, sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING), SIGHUP reloads
  and the drain on SIGTERM/SIGINT.

An item ends in exactly one of: an output in the outbox and the input deleted; the input
moved to failed/ with a reason; or the input left queued in the spool for a later pass
(outbox not writable, the file still being written or changed while it was read). Arrivals
are claimed from the shared inbox into the private spool first (:mod:`edgeguard.sources.spool`);
the spool is the queue, rescanned at start. See
:mod:`edgeguard.sinks.journal` for how a crash between publishing and deleting is settled.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Protocol, cast

from edgeguard import __version__, service
from edgeguard.config import Config
from edgeguard.errors import (
    DetectionError,
    EdgeGuardError,
    InputError,
    OutputError,
    RedactionError,
    StartupError,
)
from edgeguard.pipeline import Redacted
from edgeguard.sinks.attempts import Attempts
from edgeguard.sinks.failed import FailedSink
from edgeguard.sinks.journal import Identity, Journal
from edgeguard.sinks.outbox import Checkpoint, Delivery, Outbox, no_checkpoint, output_rel
from edgeguard.sinks.sidecar import sidecar_text
from edgeguard.sources import inbox, spool
from edgeguard.startup import Paths
from edgeguard.state import Stats, status_line, write_state
from edgeguard.tally import tally
from edgeguard.video import item as video

logger = logging.getLogger(__name__)

# How often the supervisor removes old entries from failed/, and writes the state file.
PRUNE_EVERY_S = 60.0
STATE_EVERY_S = 1.0
# The supervisor wakes at least this often (and more often under a short watchdog).
TICK_S = 0.5
# Settings that shape threads, folders or the lock: a reload logs them and keeps the old.
RESTART_ONLY = ("inbox", "outbox", "failed", "runtime_dir", "workers", "queue_size")


class Processor(Protocol):
    """What the daemon needs from the pipeline (and what the unit tests fake)."""

    def redact_file(self, path: Path) -> Redacted: ...

    def with_config(self, cfg: Config) -> Processor: ...


class Companion(Protocol):
    """Runs beside the inbox (the camera): started once the daemon holds its lock, stopped
    in the drain, reported in the state file under ``camera``."""

    @property
    def failed(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, object]: ...

    def apply(self, cfg: Config, pipe: object = None) -> None: ...


class Outcome(Enum):
    DONE = "done"  # output published, input deleted
    FAILED = "failed"  # input moved to failed/ with a reason
    GONE = "gone"  # the input vanished (or was a folder) before it was read
    DEFERRED = "deferred"  # still open for writing, or changed while read: settle again
    BLOCKED = "blocked"  # the outbox or failed/ cannot take it now: retry with backoff


class WorkQueue:
    """Bounded FIFO of inbox paths, deduplicated against queued and in-flight ones.

    ``offer`` never blocks; when full it drops the hint and sets ``overflowed`` (the file
    is still in the inbox; the supervisor rescans once there is room).
    """

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Path] = collections.deque()
        self._seen: dict[Path, float] = {}  # queued or in flight -> when first offered
        self._in_flight: set[Path] = set()
        self._overflowed = False
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

    def room(self) -> int:
        with self._cond:
            return self.capacity - len(self._queue)

    def counts(self) -> tuple[int, int]:
        with self._cond:
            return len(self._queue), len(self._in_flight)


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


@dataclasses.dataclass
class _Slot:
    """What one worker is doing: (path, since) while busy, None while idle."""

    thread: threading.Thread | None = None
    current: tuple[Path, float] | None = None


def _printable(name: str) -> str:
    """A file name fit for one log line: control characters (a newline in a name could
    forge a log line) and bytes that are not UTF-8 are shown as escapes."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in name)


def _quiet_watchdog(hide_filenames: bool) -> None:
    """watchdog logs every inotify event, with its path, at DEBUG: not with hidden names."""
    logging.getLogger("watchdog").setLevel(logging.WARNING if hide_filenames else logging.NOTSET)


def config_changes(old: Config, new: Config) -> list[tuple[str, str, object, object]]:
    """(section, key, old, new) for every setting that differs."""
    out = []
    for section in dataclasses.fields(old):
        if section.name == "source":
            continue
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                out.append((section.name, f.name, va, vb))
    return out


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
        self._processor = processor
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
        self.attempts = Attempts(paths.runtime / "attempts", cfg.daemon.max_attempts)
        self.outbox = Outbox(paths.outbox, self.journal, checkpoint=checkpoint)
        self.failed = FailedSink(paths.failed, max_count=d.failed_max_count,
                                 max_age_s=d.failed_max_age_s)
        # Arrivals are claimed from the shared inbox into the private spool at once; the
        # spool is the queue the workers take from (see edgeguard.sources.spool).
        self.root = paths.spool
        self.claimer = spool.Claimer(paths.inbox, paths.spool, stable_s=d.stable_s,
                                     hide_names=d.hide_filenames)
        self.watcher = inbox.InboxWatcher(self.root, ready=self._hint, settler=self.settler)
        self._stop = threading.Event()  # SIGTERM and SIGINT alike
        self._wake = threading.Event()
        self._reload_requested = False
        self._slots: list[_Slot] = []
        self._salt = secrets.token_bytes(16)
        # Delivered inputs whose deletion failed: never redo them (a second output).
        self._delivered: set[Identity] = set()
        self._fd_paths = Path("/proc/self/fd").is_dir()
        self._stuck_logged = False
        self._lock_fd: int | None = None
        self._needs_rescan = False
        self._backlog = 0
        self._state_failing = False
        self._videos: dict[Path, video.Meter] = {}  # videos in progress, for the state file
        self._video_lock = threading.Lock()
        self.clean_exit = True
        _quiet_watchdog(d.hide_filenames)

    # -- control (signal handlers call these) --------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    # -- naming in logs ---------------------------------------------------------------------

    def _name(self, path: Path) -> str:
        rel = self._rel_text(path)
        if self.cfg.daemon.hide_filenames:
            return "file#" + hashlib.blake2s(rel.encode(errors="surrogateescape"),
                                             key=self._salt, digest_size=4).hexdigest()
        return _printable(rel)

    def _out_name(self, path: Path) -> str:
        if self.cfg.daemon.hide_filenames:
            return "(name hidden)"
        try:
            return _printable(str(path.relative_to(self.paths.outbox)))
        except ValueError:
            return _printable(str(path))

    # -- the watcher's entry point ---------------------------------------------------------

    def _hint(self, path: Path) -> None:
        """A path that looks ready (observer thread, settler): queue it unless the queue is
        full. One in flight is not dropped as a duplicate: its worker may be deferring it
        (changed while read, still open for writing) and not have let go yet, so it goes
        back to the settler and is offered again once released."""
        if not self.queue.offer(path) and self.queue.in_flight(path):
            self.settler.track(path)

    # -- one item ----------------------------------------------------------------------------

    def _scrub(self, text: str, path: Path) -> str:
        """``text`` without the file's name, when names are to stay out of the logs."""
        if not self.cfg.daemon.hide_filenames:
            return text
        token = self._name(path)
        for form in sorted({str(path), self._rel_text(path), path.name}, key=len,
                           reverse=True):
            if form:
                text = text.replace(form, token)
        return text

    def _rel_text(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _item(self, path: Path, seen: float) -> Outcome:
        try:
            return self._handle(path, seen)
        except Exception as exc:  # the one per-item boundary: a bug fails the item, not us
            trace = "".join(traceback.format_exception(exc))
            logger.error("internal error on %s:\n%s", self._name(path), self._scrub(trace, path))
            reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            return self._fail(path, reason)
        except Exception as exc:
            # Recording the failure failed too: the input stays queued in the spool (a rescan
            # retries it) and, above all, this worker thread lives on.
            trace = "".join(traceback.format_exception(exc))
            logger.error("cannot move %s to failed/; it stays queued:\n%s",
                         self._name(path), self._scrub(trace, path))
            return Outcome.DEFERRED

    def _handle(self, path: Path, seen: float) -> Outcome:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return Outcome.GONE
        kind = inbox.kind_of(st.st_mode)
        if kind is inbox.Kind.DIRECTORY:
            return Outcome.GONE  # its files are watched and scanned themselves
        reason = inbox.refusal(kind)
        if reason is not None:
            return self._fail(path, reason, refused=True)
        if Identity.of(st) in self._delivered:
            return self._retry_delete(path, st)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return Outcome.GONE
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
                return self._fail(path, inbox.refusal(inbox.Kind.SYMLINK) or "", refused=True)
            return self._fail(path, f"cannot open: {exc.strerror}")
        try:
            return self._process(path, fd, st, seen)
        finally:
            os.close(fd)

    def _process(self, path: Path, fd: int, st: os.stat_result, seen: float) -> Outcome:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
            self.settler.track(path)  # replaced between lstat and open: look again
            return Outcome.DEFERRED
        writing = inbox.writer_has_open(fd)
        if writing or (writing is None and inbox.is_young(fst, time.time_ns(),
                                                           self.cfg.daemon.stable_s)):
            # Claimed files may still be open (the claim does not wait for the close);
            # where no lease can tell, a file must first keep still for stable_s.
            logger.debug("%s is still open for writing; waiting for its close", self._name(path))
            self.settler.track(path)
            return Outcome.DEFERRED
        identity = Identity.of(fst)
        # The pipeline reads the file through our descriptor: no second lookup by name,
        # so nothing can swap the file for a link between our checks and its read.
        source = Path(f"/proc/self/fd/{fd}") if self._fd_paths else path
        processor = self._processor
        deaths = self.attempts.begin(identity)
        try:
            if deaths >= self.attempts.limit:
                return self._fail(path, f"the daemon stopped {deaths} times while processing "
                                        "this file (crash, hang or out of memory); it is not "
                                        "tried again")
            kind = video.kind_of_fd(fd)
            if kind is not None:
                return self._video(path, fd, source, identity, seen, kind)
            try:
                result = processor.redact_file(source)
            except (InputError, DetectionError, RedactionError) as exc:
                return self._fail(path, str(exc))
            if Identity.of(os.fstat(fd)) != identity:
                logger.info("%s changed while it was read; it is taken again once settled",
                            self._name(path))
                self.settler.track(path)
                return Outcome.DEFERRED
            return self._deliver(path, identity, result, seen)
        finally:
            self.attempts.end(identity)

    def _deliver(self, path: Path, identity: Identity, result: Redacted,
                 seen: float) -> Outcome:
        rel = path.relative_to(self.root)
        rel_out = output_rel(rel, result.format, result.suffix)
        sidecar = self._sidecar(result) if self.cfg.output.sidecar else None
        try:
            delivery = self.outbox.deliver(source=path, identity=identity, rel_out=rel_out,
                                           data=result.data, sidecar=sidecar)
        except OutputError as exc:
            return self._blocked(path, str(exc))
        self._completed(path, identity, delivery)
        latency = self._clock() - seen
        found = tally(result.detections)
        self.stats.done(faces=found.faces, weak=found.weak, latency_s=latency)
        logger.info("redacted %s: %s in %.0f ms -> %s", self._name(path), found.text(),
                    latency * 1000.0, self._out_name(delivery.final))
        return Outcome.DONE

    def _completed(self, path: Path, identity: Identity, delivery: Delivery) -> None:
        """After a delivery: the outbox works again; the input leaves the spool (a failure
        to remove it is remembered, so it is not redone)."""
        if self.backoff.success():
            logger.warning("outbox writable again; resuming")
            self._wake.set()
        try:
            self.outbox.complete(delivery)
        except OSError as exc:
            self._delivered.add(identity)
            logger.error("%s was delivered but cannot be removed from the inbox (%s); "
                         "it will not be redone", self._name(path), exc.strerror)

    def _video(self, path: Path, fd: int, source: Path, identity: Identity, seen: float,
               kind: str) -> Outcome:
        """A video: redacted straight into the outbox's temporary file (see
        :mod:`edgeguard.video.item`), published like an image; its progress goes to the state
        file and refreshes the worker's stuck timer (a long video is not a hung worker)."""
        if not self._video_lock.acquire(blocking=False):
            # One video at a time (its memory is the figure the README gives); photos go on
            # in the other workers, and this one is offered again once settled.
            self.settler.track(path)
            return Outcome.DEFERRED
        try:
            return self._video_locked(path, fd, source, identity, seen, kind)
        finally:
            self._video_lock.release()

    def _video_locked(self, path: Path, fd: int, source: Path, identity: Identity,
                      seen: float, kind: str) -> Outcome:
        from edgeguard.video.probe import output_name
        from edgeguard.video.transcode import FrameSearch

        rel = path.relative_to(self.root)
        meter = video.Meter(self._name(path), clock=self._clock)
        slot = next((s for s in self._slots if s.thread is threading.current_thread()), None)

        def progress(done: int, total: int | None) -> None:
            meter.update(done, total)
            if slot is not None:
                slot.current = (path, self._clock())
            if self._stop.is_set():
                raise video.Cancelled

        result: video.VideoResult | None = None
        search = cast("FrameSearch", self._processor)  # the Pipeline: find() and cfg

        def write(tmp: Path) -> None:
            nonlocal result
            result = video.write_new_video(source, tmp, kind=kind, search=search,
                                           progress=progress)
            if Identity.of(os.fstat(fd)) != identity:
                raise video.Cancelled("changed while read")

        self._videos[path] = meter
        try:
            delivery = self.outbox.deliver(source=path, identity=identity,
                                           rel_out=output_name(rel, kind), data=write)
        except (InputError, DetectionError, RedactionError) as exc:
            return self._fail(path, str(exc))
        except OutputError as exc:
            return self._blocked(path, str(exc))
        except video.Cancelled as exc:
            logger.info("%s: video %s; it is taken again from the start", self._name(path),
                        exc or "stopped")
            if not self._stop.is_set():
                self.settler.track(path)
            return Outcome.DEFERRED
        finally:
            self._videos.pop(path, None)
        self._completed(path, identity, delivery)
        assert result is not None
        latency = self._clock() - seen
        self.stats.done(faces=result.faces, latency_s=latency)
        logger.info("redacted video %s: %d frames, %d with faces, %d audio packets in %.1f s "
                    "-> %s", self._name(path), result.frames, result.face_frames,
                    result.audio_packets, latency, self._out_name(delivery.final))
        return Outcome.DONE

    def _retry_delete(self, path: Path, st: os.stat_result) -> Outcome:
        identity = Identity.of(st)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.debug("still cannot remove a delivered input: %s", exc.strerror)
            return Outcome.BLOCKED
        self._delivered.discard(identity)
        return Outcome.DONE

    def _sidecar(self, result: Redacted) -> str:
        return sidecar_text(result, self.cfg)

    def _fail(self, path: Path, reason: str, *, refused: bool = False) -> Outcome:
        """Fail closed: nothing to the outbox; the raw file to failed/ with its reason."""
        try:
            rel = path.relative_to(self.root)
            kept = self.failed.record(path, rel, reason)
        except FileNotFoundError:
            if not os.path.lexists(path):
                return Outcome.GONE
            return self._blocked(path, "failed/ cannot take a file: folder missing")
        except OSError as exc:
            return self._blocked(path, f"failed/ cannot take a file: {exc.strerror or exc}")
        shown = self._scrub(reason, path)
        self.stats.failure(self._name(path), shown, refused=refused,
                           listed=None if self.cfg.daemon.hide_filenames else rel.as_posix())
        # Where it is now: the operator fixes it there (only the folder when names are hidden).
        where = self.paths.failed if self.cfg.daemon.hide_filenames else kept.path
        logger.warning("%s moved to %s: %s", self._name(path), _printable(str(where)), shown)
        return Outcome.FAILED

    def _blocked(self, path: Path, reason: str) -> Outcome:
        """The input stays queued (in the spool); all work pauses, retried with backoff."""
        pause, first = self.backoff.failure()
        reason = self._scrub(reason, path)
        self.stats.error(reason)
        if first:
            logger.error("%s; %s stays queued, retrying in %.0f s (up to every %.0f s)",
                         reason, self._name(path), pause, self.backoff.cap_s)
            self._notify(f"STATUS={reason}; retrying")
        else:
            logger.debug("%s; retrying in %.0f s", reason, pause)
        # The path is released; the rescan that follows the pause finds it again.
        self._needs_rescan = True
        return Outcome.BLOCKED

    # -- workers -----------------------------------------------------------------------------

    def _worker(self, slot: _Slot) -> None:
        while not self._stop.is_set():
            pause = self.backoff.remaining()
            if pause > 0:
                self._stop.wait(min(pause, TICK_S))
                continue
            got = self.queue.take(timeout=TICK_S)
            if got is None:
                continue
            path, seen = got
            slot.current = (path, self._clock())
            try:
                self._item(path, seen)
            finally:
                slot.current = None
                self.queue.release(path)
            if ((self._needs_rescan or self.queue.overflowed)
                    and self.queue.room() * 2 >= self.queue.capacity):
                self._wake.set()  # refill from the inbox now, not at the next tick

    # -- supervising -------------------------------------------------------------------------

    def _acquire_lock(self) -> None:
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"another edgeguard daemon is running on {self.paths.runtime} "
                               f"(lock {self.paths.lock})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _rescan(self) -> None:
        """Queue the oldest ready inbox files that fit; settle the young ones."""
        now_ns = time.time_ns()
        stable_s = self.cfg.daemon.stable_s
        self.claimer.sweep()  # what the claimer's events missed; emptied folders
        room = self.queue.room()
        self.queue.take_overflow()
        self._needs_rescan = False
        backlog = 0

        def ready() -> collections.abc.Iterator[inbox.Found]:
            nonlocal backlog
            for found in inbox.scan(self.root):
                backlog += 1
                if self.queue.known(found.path) or found.path in self.settler:
                    continue
                if (stat.S_ISREG(found.st.st_mode)
                        and inbox.is_young(found.st, now_ns, stable_s)
                        and inbox.probe_writer(found.path) is not False):
                    self.settler.track(found.path)  # maybe still being written
                    continue
                yield found

        chosen = inbox.oldest(ready(), room + 1)
        for found in chosen[:room]:
            self.queue.offer(found.path)
        if len(chosen) > room:
            self._needs_rescan = True
        self._backlog = backlog

    def _recover(self) -> None:
        finished = self.outbox.recover()
        if finished:
            logger.warning("journal: %d interrupted deliveries finished", len(finished))
        # Published, but the input could not be deleted: never redo those.
        self._delivered |= self.outbox.undeletable
        swept = self.outbox.sweep_temporaries()
        if swept:
            logger.warning("outbox: removed %d unfinished temporary files", swept)

    def _stuck(self, now: float) -> tuple[Path, float] | None:
        worst: tuple[Path, float] | None = None
        for slot in self._slots:
            cur = slot.current
            if cur is not None and now - cur[1] > self.cfg.daemon.stuck_s and (
                    worst is None or cur[1] < worst[1]):
                worst = cur
        return worst

    def _healthy(self, now: float) -> bool:
        stuck = self._stuck(now)
        if stuck is not None:
            if not self._stuck_logged:
                logger.error("a worker has been stuck on %s for %.0f s; watchdog pings stop "
                             "so systemd restarts the service", self._name(stuck[0]),
                             now - stuck[1])
                self._stuck_logged = True
            return False
        self._stuck_logged = False
        return True

    def _snapshot(self, state: str) -> dict[str, object]:
        queued, in_flight = self.queue.counts()
        return self.stats.snapshot(
            state=state,
            queued=queued + len(self.settler),
            in_flight=in_flight,
            backlog=self._backlog,
            outbox_blocked=self.backoff.failing,
            inbox=str(self.paths.inbox),
            outbox=str(self.paths.outbox),
            failed_dir=str(self.paths.failed),
            config=self.cfg.source,
            version=__version__,
            **({"camera": self.camera.status()} if self.camera is not None else {}),
            videos=[m.snapshot() for m in list(self._videos.values())],
        )

    def _write_state(self, state: str) -> dict[str, object]:
        snap = self._snapshot(state)
        try:
            write_state(self.paths.runtime, snap)
        except OSError as exc:
            if not self._state_failing:  # once per outage: a full tmpfs lasts
                logger.warning("cannot write the state file: %s", exc.strerror)
            self._state_failing = True
        else:
            self._state_failing = False
        return snap

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
        old = self.cfg
        try:
            new = self._load_config()
        except EdgeGuardError as exc:
            logger.error("reload: %s; keeping the running configuration", exc)
            self.stats.error(f"reload: {exc}")
            return
        changes = config_changes(old, new)
        kept = [(s, k, a, b) for s, k, a, b in changes if s == "daemon" and k in RESTART_ONLY]
        if kept:
            logger.warning("reload: %s need a restart; keeping the running values",
                           ", ".join(f"daemon.{k}" for _, k, _, _ in kept))
            new = dataclasses.replace(new, daemon=dataclasses.replace(
                new.daemon, **{k: getattr(old.daemon, k) for _, k, _, _ in kept}))
        applied = [(s, k, a, b) for s, k, a, b in changes if (s, k, a, b) not in kept]
        if not applied:
            logger.info("reload: %s: no changes to apply", new.source)
            self.cfg = dataclasses.replace(self.cfg, source=new.source)
            return
        if any(s != "daemon" for s, _, _, _ in applied):
            try:
                self._processor = self._processor.with_config(new)
            except EdgeGuardError as exc:
                logger.error("reload: %s; keeping the running configuration", exc)
                self.stats.error(f"reload: {exc}")
                return
        self.cfg = new
        if self.camera is not None:
            self.camera.apply(new, self._processor)
        d = new.daemon
        _quiet_watchdog(d.hide_filenames)
        self.settler.stable_s = d.stable_s
        self.claimer.stable_s = d.stable_s
        self.claimer.hide_names = d.hide_filenames
        self.backoff.cap_s = d.retry_max_s
        self.failed.max_count = d.failed_max_count
        self.failed.max_age_s = d.failed_max_age_s
        logger.info("reload: applied %s", "; ".join(f"{s}.{k}: {a!r} -> {b!r}"
                                                     for s, k, a, b in applied))

    def run(self) -> int:
        """Recover, scan, serve until stopped; returns the exit code."""
        self._acquire_lock()
        try:
            return self._run()
        finally:
            self._release_lock()

    def _run(self) -> int:
        self.journal.open()
        self.attempts.open()
        self._recover()
        if self.camera is not None:
            self.camera.start()  # StartupError when camera.require finds no camera
        with contextlib.suppress(FileExistsError):  # checked by startup.check_spool
            os.mkdir(self.root, spool.SPOOL_MODE)
        self.watcher.start()  # before the scan: nothing that lands meanwhile is missed
        try:
            self.claimer.start()
            self._rescan()
            for i in range(self.cfg.daemon.workers):
                slot = _Slot()
                slot.thread = threading.Thread(target=self._worker, args=(slot,),
                                               name=f"edgeguard-worker-{i}", daemon=True)
                self._slots.append(slot)
                slot.thread.start()
            snap = self._write_state("running")
            self._notify(f"READY=1\nSTATUS={status_line(snap)}")
            logger.info("ready: drop images into %s; redacted copies appear in %s; "
                        "failed inputs move to %s", self.paths.inbox, self.paths.outbox,
                        self.paths.failed)
            code = self._supervise()
        finally:
            self.claimer.close()
            self.watcher.close()
        return self._drain(code)

    def _supervise(self) -> int:
        tick = TICK_S if self._watchdog_s is None else min(TICK_S, self._watchdog_s / 4)
        now = self._clock()
        next_rescan = now + self.cfg.daemon.rescan_s
        next_prune = now
        next_state = now + STATE_EVERY_S
        last_ping = -1e9
        last_status = ""
        last_key: tuple[object, ...] = ()
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload_requested:
                self._reload()
            for path in self.settler.due():
                self._hint(path)
            self.claimer.tidy()  # emptied folders, without waiting for the next rescan
            now = self._clock()
            blocked = self.backoff.remaining() > 0
            room = self.queue.room() * 2 >= self.queue.capacity
            if not blocked and (now >= next_rescan or (
                    (self._needs_rescan or self.queue.overflowed) and room)):
                self._rescan()
                next_rescan = now + self.cfg.daemon.rescan_s
            if now >= next_prune:
                self.failed.prune()
                next_prune = now + PRUNE_EVERY_S
            if not self.watcher.alive() or not self.claimer.alive():
                logger.error("the inbox watcher stopped; exiting so systemd restarts us")
                return 1
            dead = [s for s in self._slots if s.thread is not None and not s.thread.is_alive()]
            if dead:
                logger.error("a worker thread died; exiting so systemd restarts us")
                return 1
            cam = self.camera.status() if self.camera is not None else {}
            if self.camera is not None and self.camera.failed and self.cfg.camera.require:
                logger.error("the required camera failed (%s); exiting so systemd restarts "
                             "us", cam.get("last_error"))
                return 1
            healthy = self._healthy(now)
            if (self._watchdog_s is not None and healthy
                    and now - last_ping >= self._watchdog_s / 4):
                self._notify("WATCHDOG=1")
                last_ping = now
            key = (self.stats.version, self.queue.counts(), len(self.settler),
                   self.backoff.failing, cam.get("frames"), cam.get("stills"), cam.get("state"),
                   tuple(m.done for m in list(self._videos.values())))
            if now >= next_state and key != last_key:
                snap = self._write_state("running")
                last_key = key
                next_state = now + STATE_EVERY_S
                line = status_line(snap)
                if line != last_status:
                    self._notify(f"STATUS={line}")
                    last_status = line
        return 0

    def _drain(self, code: int) -> int:
        self._stop.set()
        self.queue.close()
        self._notify("STOPPING=1")
        self._write_state("stopping")
        if self.camera is not None:
            self.camera.stop()  # finishes the open video segment and a still in progress
        deadline = self._clock() + self.cfg.daemon.drain_s
        busy = sum(1 for s in self._slots if s.current is not None)
        if busy:
            logger.info("stopping: finishing %d image(s) in progress", busy)
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(max(0.0, deadline - self._clock()))
        left = [s for s in self._slots if s.thread is not None and s.thread.is_alive()]
        if left:
            logger.error("stopping: %d image(s) still in progress after %.0f s; exiting "
                         "anyway (their inputs stay queued for the next start)", len(left),
                         self.cfg.daemon.drain_s)
            self.clean_exit = False
            code = code or 1
        self._write_state("stopped")
        logger.info("stopped: %d processed, %d failed", *self._counts())
        return code

    def _counts(self) -> tuple[int, int]:
        snap = self.stats.snapshot()
        return int(snap["processed"]), int(snap["failed"])
