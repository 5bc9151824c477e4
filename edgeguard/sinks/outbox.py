"""The outbox: only redacted images, published atomically, never replacing a file.

Each output is written to a hidden temporary name (``.edgeguard-<id>.tmp``) in its final
folder, fsynced, and published with :func:`edgeguard.sinks.fileops.publish` (a rename
with RENAME_NOREPLACE): a reader sees the whole file or nothing, and an existing file is
never overwritten (a collision gets a ``-1``, ``-2``, ... suffix). Subfolders of the inbox
are mirrored. The journal (see :mod:`edgeguard.sinks.journal`) records each step, so a
crash at any point leaves exactly one output or none, never a duplicate.

Errors writing the outbox (full, read-only, permissions) are :class:`OutputError`: the
raw file stays queued and nothing partial remains in the outbox.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeguard.errors import OutputError
from edgeguard.sinks.fileops import (
    NAME_MAX,
    candidate_name,
    publish,
    sweep_leftovers,
    temp_path,
    write_new,
)
from edgeguard.sinks.journal import PUBLISHING, Identity, Journal, Record

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
SIDECAR_SUFFIX = ".json"
# An output name leaves room for its sidecar's suffix: inbox names may be 255 bytes long.
OUTPUT_NAME_MAX = NAME_MAX - len(SIDECAR_SUFFIX)

# Suffixes that already name an output format; an input keeps its own spelling
# (photo.JPEG stays photo.JPEG) when the output format is the same.
_FORMAT_OF_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png",
                     ".webp": "webp", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
                     ".gif": "gif"}

Writer = Callable[[Path], None]
"""Writes an output straight into its temporary path (a video, too large to hold in memory):
it creates the file exclusively, fsyncs it, and removes it if it fails."""

Checkpoint = Callable[[str], None]
"""Called with a step name between the steps of a delivery; tests raise there to crash."""


def no_checkpoint(step: str) -> None:
    return None


def output_rel(rel: Path, fmt: str, suffix: str) -> Path:
    """The outbox path for inbox path ``rel`` and an output of format ``fmt``."""
    if _FORMAT_OF_SUFFIX.get(rel.suffix.lower()) == fmt:
        return rel
    if rel.suffix.lower() in _FORMAT_OF_SUFFIX:
        return rel.with_suffix(suffix)
    return rel.with_name(rel.name + suffix)  # "scan" -> "scan.jpg", "a.b" -> "a.b.jpg"


def candidate(path: Path, n: int) -> Path:
    """``path`` for n == 0, else ``stem-n.ext``: the names tried after a collision.

    The stem is shortened where the name (with its sidecar's ``.json``) would pass the
    file system's 255-byte limit: an over-long name must not look like an outbox outage.
    """
    name = candidate_name(path.name, n, OUTPUT_NAME_MAX)
    return path if name == path.name else path.with_name(name)


@dataclass(frozen=True)
class Delivery:
    """A published output whose inbox file is still to be removed."""

    record: Record
    final: Path


def _output_error(exc: OSError, what: str) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the outbox's file system"
    elif exc.errno == errno.EROFS:
        reason = "the outbox's file system is read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied writing the outbox"
    err = OutputError(f"{what}: {reason}")
    err.errno = exc.errno  # type: ignore[attr-defined]
    return err


class Outbox:
    def __init__(self, root: Path, journal: Journal, *,
                 checkpoint: Checkpoint = no_checkpoint) -> None:
        self.root = root
        self.journal = journal
        self._checkpoint = checkpoint
        # Inputs whose outputs recovery found published but that could not be deleted.
        self.undeletable: set[Identity] = set()

    # -- delivering -------------------------------------------------------------------------

    def deliver(self, *, source: Path, identity: Identity, rel_out: Path,
                data: bytes | Writer, sidecar: str | None = None) -> Delivery:
        """Publish ``data`` as ``rel_out`` (or a collision-suffixed name) in the outbox.

        ``data`` is the output's bytes, or a :data:`Writer` that writes it into the
        temporary path; whatever the writer raises abandons the delivery and propagates.

        The caller then calls :meth:`complete` to remove ``source`` from the inbox.
        Raises OutputError with nothing partial left (when the file system allows the
        temporary file to be removed; else the journal has it removed at next start).
        """
        folder = self.root / rel_out.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _output_error(exc, "cannot create an outbox folder") from exc
        tmp = temp_path(folder, TMP_SUFFIX)
        sidecar_tmp = tmp.with_name(tmp.stem + SIDECAR_SUFFIX + TMP_SUFFIX) if sidecar else None
        try:
            rec = self.journal.begin(inbox=source, identity=identity, tmp=tmp,
                                     sidecar=sidecar, sidecar_tmp=sidecar_tmp)
        except OSError as exc:
            # The runtime tmpfs is full or gone: not the input's fault; retry later.
            raise OutputError(f"cannot write the delivery journal in {self.journal.folder}: "
                              f"{exc.strerror or exc}") from exc
        self._checkpoint("journal-begun")
        try:
            if isinstance(data, bytes):
                write_new(tmp, data)
            else:
                data(tmp)
            self._checkpoint("tmp-written")
            rec, final = self._publish(rec, tmp, self.root / rel_out)
        except OSError as exc:
            self._abandon(rec)
            raise _output_error(exc, "cannot write to the outbox") from exc
        except BaseException:
            self._abandon(rec)  # the writer failed (bad input, cancelled): nothing remains
            raise
        self._checkpoint("published")
        if sidecar is not None and sidecar_tmp is not None:
            self._write_sidecar(final, sidecar, sidecar_tmp)
            self._checkpoint("sidecar-written")
        return Delivery(rec, final)

    def _publish(self, rec: Record, tmp: Path, wanted: Path) -> tuple[Record, Path]:
        journaled = rec

        def journal_it(final: Path) -> None:
            nonlocal journaled
            journaled = self.journal.advance(journaled, phase=PUBLISHING, final=str(final))
            self._checkpoint("journaled-publishing")

        final = publish(tmp, wanted.parent, wanted.name, limit=OUTPUT_NAME_MAX,
                        before=journal_it)
        return journaled, final

    def _write_sidecar(self, final: Path, text: str, tmp: Path) -> None:
        target = final.with_name(final.name + SIDECAR_SUFFIX)
        try:
            write_new(tmp, text.encode())
            publish(tmp, target.parent, target.name, max_tries=1)
        except FileExistsError:
            logger.warning("outbox: a sidecar name is taken; sidecar skipped")
            tmp.unlink(missing_ok=True)
        except OSError as exc:
            # The image is out; a missing sidecar is reported, not retried (that would
            # mean a second image).
            logger.warning("outbox: sidecar not written: %s", exc.strerror)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _abandon(self, rec: Record) -> None:
        """Undo an unpublished delivery: remove the temporary file, drop the record."""
        try:
            Path(rec.tmp).unlink(missing_ok=True)
        except OSError as exc:
            # A read-only file system: leave the record; recovery removes the file later.
            logger.debug("outbox: temporary file kept for recovery: %s", exc.strerror)
            return
        self.journal.drop(rec)

    def complete(self, delivery: Delivery) -> bool:
        """Remove the inbox file if it is still the one that was read; drop the record.

        Returns False when the inbox now holds a different file (it is left for its own
        pass). An OSError removing it propagates and the record stays, so the file is
        not redone.
        """
        removed = _remove_if_same(Path(delivery.record.inbox), delivery.record.identity)
        self._checkpoint("inbox-removed")
        self.journal.drop(delivery.record)
        self._checkpoint("journal-dropped")
        return removed

    # -- recovery ---------------------------------------------------------------------------

    def recover(self) -> list[Path]:
        """Finish or undo every delivery a crash interrupted; inbox files left to redo.

        Returns the inbox paths whose deliveries were finished (their inputs removed).
        """
        finished: list[Path] = []
        for rec in self.journal.records():
            if self.resolve(rec):
                finished.append(Path(rec.inbox))
        return finished

    def resolve(self, rec: Record) -> bool:
        """Settle one record; True when its output had been published."""
        tmp = Path(rec.tmp)
        published = False
        if rec.phase == PUBLISHING:
            try:
                st = os.lstat(tmp)
            except FileNotFoundError:
                published = True
            else:
                # Link-fallback publishing: T linked to F but not yet unlinked.
                published = st.st_nlink > 1
        if not _unlink_quietly(tmp):
            return published  # read-only outbox: keep the record, try at next start
        if published:
            final = Path(rec.final)
            if rec.sidecar is not None and rec.sidecar_tmp:
                sc_tmp = Path(rec.sidecar_tmp)
                _unlink_quietly(sc_tmp)
                if not os.path.lexists(final.with_name(final.name + SIDECAR_SUFFIX)):
                    self._write_sidecar(final, rec.sidecar, sc_tmp)
            try:
                _remove_if_same(Path(rec.inbox), rec.identity)
            except OSError as exc:
                logger.error("journal: cannot remove a delivered inbox file: %s", exc.strerror)
                self.undeletable.add(rec.identity)
                return published
            logger.info("journal: finished a delivery interrupted after publishing")
        else:
            if rec.sidecar_tmp:
                _unlink_quietly(Path(rec.sidecar_tmp))
            logger.info("journal: undid a delivery interrupted before publishing; "
                        "its input is redone")
        self.journal.drop(rec)
        return published

    def sweep_temporaries(self) -> int:
        """Remove temporary files no record accounts for (a crash, then a reboot that
        emptied the journal). Call after :meth:`recover`, before any delivery starts."""
        return sweep_leftovers(self.root)

    def writable(self) -> None:
        """Probe: create, fsync and remove a file in the outbox; OutputError when it fails."""
        probe = temp_path(self.root, ".probe")
        try:
            write_new(probe, b"edgeguard")
            probe.unlink()
        except OSError as exc:
            raise _output_error(exc, f"outbox {self.root} not writable") from exc


def _unlink_quietly(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("outbox: cannot remove a temporary file: %s", exc.strerror)
        return False
    return True


def _remove_if_same(path: Path, identity: Identity) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if Identity.of(st) != identity:
        return False
    os.unlink(path)
    return True
