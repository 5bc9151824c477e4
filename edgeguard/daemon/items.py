"""One item from the spool, start to end: :meth:`ItemHandler.handle` is the one per-item
error boundary, and returns how the item ended (:class:`ItemOutcome`).

It runs in whichever thread calls it (the workers; a test calls it directly) and touches
only files and the objects it is given: no threads of its own, no waiting.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from edgeguard.config import Config
from edgeguard.errors import DetectionError, InputError, OutputError, RedactionError
from edgeguard.pipeline import Redacted
from edgeguard.sinks.attempts import Attempts
from edgeguard.sinks.journal import Identity
from edgeguard.sinks.outbox import output_rel
from edgeguard.sinks.sidecar import sidecar_text
from edgeguard.sources import inbox
from edgeguard.tally import tally
from edgeguard.video import item as video

from .ends import Endings, ItemOutcome
from .workqueue import Control

logger = logging.getLogger(__name__)


class Processor(Protocol):
    """What the daemon needs from the pipeline (and what the unit tests fake)."""

    def redact_file(self, path: Path) -> Redacted: ...

    def with_config(self, cfg: Config) -> Processor: ...


def _no_touch() -> None:
    pass


class ItemHandler:
    """Turns one spooled input into an output in the outbox or a record in failed/.

    ``cfg`` and ``processor`` change on a reload (:meth:`configure`); ``ends`` records how
    items end; ``settler`` takes back files to look at again; a stop (``control``) cancels
    a long video.
    """

    def __init__(self, cfg: Config, processor: Processor, ends: Endings, *,
                 attempts: Attempts, settler: inbox.Settler, control: Control,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.processor = processor
        self.ends = ends
        self.root = ends.root
        self.namer = ends.namer
        self.outbox = ends.outbox
        self.stats = ends.stats
        self.attempts = attempts
        self.settler = settler
        self._control = control
        self._clock = clock
        self.videos: dict[Path, video.Meter] = {}  # videos in progress, for the state file
        self._video_lock = threading.Lock()
        self._fd_paths = Path("/proc/self/fd").is_dir()

    def configure(self, cfg: Config, processor: Processor) -> None:
        self.cfg = cfg
        self.processor = processor

    def handle(self, path: Path, seen: float, touch: Callable[[], None] = _no_touch
               ) -> ItemOutcome:
        """``path`` (queued since ``seen``) to its end; ``touch`` is called while a long
        video makes progress (the caller's sign that it is not stuck)."""
        name = self.namer.name
        try:
            return self._handle(path, seen, touch)
        except Exception as exc:  # the one per-item boundary: a bug fails the item, not us
            trace = "".join(traceback.format_exception(exc))
            logger.error("internal error on %s:\n%s", name(path), self.namer.scrub(trace, path))
            reason = f"internal error: {type(exc).__name__}: {exc}"
        try:
            return self.ends.fail(path, reason)
        except Exception as exc:
            # Recording the failure failed too: the input stays queued in the spool (a rescan
            # retries it) and, above all, the calling worker thread lives on.
            trace = "".join(traceback.format_exception(exc))
            logger.error("cannot move %s to failed/; it stays queued:\n%s",
                         name(path), self.namer.scrub(trace, path))
            return ItemOutcome.DEFERRED

    def _handle(self, path: Path, seen: float, touch: Callable[[], None]) -> ItemOutcome:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return ItemOutcome.GONE
        kind = inbox.kind_of(st.st_mode)
        if kind is inbox.Kind.DIRECTORY:
            return ItemOutcome.GONE  # its files are watched and scanned themselves
        reason = inbox.refusal(kind)
        if reason is not None:
            return self.ends.fail(path, reason, refused=True)
        if Identity.of(st) in self.ends.delivered:
            return self.ends.retry_delete(path, st)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return ItemOutcome.GONE
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the lstat
                return self.ends.fail(path, inbox.refusal(inbox.Kind.SYMLINK) or "", refused=True)
            return self.ends.fail(path, f"cannot open: {exc.strerror}")
        try:
            return self._process(path, fd, st, seen, touch)
        finally:
            os.close(fd)

    def _process(self, path: Path, fd: int, st: os.stat_result, seen: float,
                 touch: Callable[[], None]) -> ItemOutcome:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
            self.settler.track(path)  # replaced between lstat and open: look again
            return ItemOutcome.DEFERRED
        writing = inbox.writer_has_open(fd)
        if writing or (writing is None and inbox.is_young(fst, time.time_ns(),
                                                           self.cfg.daemon.stable_s)):
            # Claimed files may still be open (the claim does not wait for the close);
            # where no lease can tell, a file must first keep still for stable_s.
            logger.debug("%s is still open for writing; waiting for its close",
                         self.namer.name(path))
            self.settler.track(path)
            return ItemOutcome.DEFERRED
        identity = Identity.of(fst)
        # The pipeline reads the file through our descriptor: no second lookup by name,
        # so nothing can swap the file for a link between our checks and its read.
        source = Path(f"/proc/self/fd/{fd}") if self._fd_paths else path
        processor = self.processor
        deaths = self.attempts.begin(identity)
        try:
            if deaths >= self.attempts.limit:
                return self.ends.fail(path, f"the daemon stopped {deaths} times while processing "
                                        "this file (crash, hang or out of memory); it is not "
                                        "tried again")
            kind = video.kind_of_fd(fd)
            if kind is not None:
                return self._video(path, fd, source, identity, seen, kind, touch)
            try:
                result = processor.redact_file(source)
            except (InputError, DetectionError, RedactionError) as exc:
                return self.ends.fail(path, str(exc))
            if Identity.of(os.fstat(fd)) != identity:
                logger.info("%s changed while it was read; it is taken again once settled",
                            self.namer.name(path))
                self.settler.track(path)
                return ItemOutcome.DEFERRED
            return self._deliver(path, identity, result, seen)
        finally:
            self.attempts.end(identity)

    def _deliver(self, path: Path, identity: Identity, result: Redacted,
                 seen: float) -> ItemOutcome:
        rel = path.relative_to(self.root)
        rel_out = output_rel(rel, result.format, result.suffix)
        sidecar = sidecar_text(result, self.cfg) if self.cfg.output.sidecar else None
        try:
            delivery = self.outbox.deliver(source=path, identity=identity, rel_out=rel_out,
                                           data=result.data, sidecar=sidecar)
        except OutputError as exc:
            return self.ends.blocked(path, str(exc))
        self.ends.completed(path, identity, delivery)
        latency = self._clock() - seen
        found = tally(result.detections)
        self.stats.done(faces=found.faces, weak=found.weak, latency_s=latency)
        logger.info("redacted %s: %s in %.0f ms -> %s", self.namer.name(path), found.text(),
                    latency * 1000.0, self.namer.out_name(delivery.final))
        return ItemOutcome.DONE

    def _video(self, path: Path, fd: int, source: Path, identity: Identity, seen: float,
               kind: str, touch: Callable[[], None]) -> ItemOutcome:
        """A video: redacted straight into the outbox's temporary file (see
        :mod:`edgeguard.video.item`), published like an image; its progress goes to the state
        file and calls ``touch`` (a long video is not a hung worker)."""
        if not self._video_lock.acquire(blocking=False):
            # One video at a time (its memory is the figure the README gives); photos go on
            # in the other workers, and this one is offered again once settled.
            self.settler.track(path)
            return ItemOutcome.DEFERRED
        try:
            return self._video_locked(path, fd, source, identity, seen, kind, touch)
        finally:
            self._video_lock.release()

    def _video_locked(self, path: Path, fd: int, source: Path, identity: Identity,
                      seen: float, kind: str, touch: Callable[[], None]) -> ItemOutcome:
        from edgeguard.video.probe import output_name
        from edgeguard.video.transcode import FrameFinder

        rel = path.relative_to(self.root)
        meter = video.Meter(self.namer.name(path), clock=self._clock)

        def progress(done: int, total: int | None) -> None:
            meter.update(done, total)
            touch()
            if self._control.stopping:
                raise video.Cancelled

        result: video.VideoResult | None = None
        search = cast("FrameFinder", self.processor)  # the Pipeline: find() and cfg

        def write(tmp: Path) -> None:
            nonlocal result
            result = video.write_new_video(source, tmp, kind=kind, search=search,
                                           progress=progress)
            if Identity.of(os.fstat(fd)) != identity:
                raise video.Cancelled("changed while read")

        self.videos[path] = meter
        try:
            delivery = self.outbox.deliver(source=path, identity=identity,
                                           rel_out=output_name(rel, kind), data=write)
        except (InputError, DetectionError, RedactionError) as exc:
            return self.ends.fail(path, str(exc))
        except OutputError as exc:
            return self.ends.blocked(path, str(exc))
        except video.Cancelled as exc:
            logger.info("%s: video %s; it is taken again from the start",
                        self.namer.name(path), exc or "stopped")
            if not self._control.stopping:
                self.settler.track(path)
            return ItemOutcome.DEFERRED
        finally:
            self.videos.pop(path, None)
        self.ends.completed(path, identity, delivery)
        assert result is not None
        latency = self._clock() - seen
        self.stats.done(faces=result.faces, latency_s=latency)
        logger.info("redacted video %s: %d frames, %d with faces, %d audio packets in %.1f s "
                    "-> %s", self.namer.name(path), result.frames, result.face_frames,
                    result.audio_packets, latency, self.namer.out_name(delivery.final))
        return ItemOutcome.DONE

