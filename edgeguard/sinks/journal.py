"""Intent records that make "publish the output, then delete the input" crash-safe.

A delivery takes steps that no single system call covers; ``kill -9`` can land between
any two of them. Before each step that matters, the delivery writes what it is about to
do into a small record on the runtime tmpfs (the same lifetime as the inbox: a reboot
empties both). The steps, with the record's phase:

    1. record: phase "writing", the inbox file's identity, the temporary name T
    2. write T in the output's folder, fsync
    3. record: phase "publishing", the final name F it is about to try
    4. rename T -> F without replacing (a collision: the next F, back to 3)
    5. fsync the folder; the sidecar (its text is in the record)
    6. delete the inbox file, if it is still the file that was read (same identity)
    7. drop the record

Recovery, for every record found at start (``Outbox.recover``):
    - "writing": T may be partial; remove it. The inbox file stays and is redone.
    - "publishing" and T exists: the rename did not happen; remove T, redo the input.
    - "publishing" and T is gone: T existed before the record said "publishing", and only
      the rename removes it, so F was published. Finish: write a missing sidecar, delete
      the inbox file if its identity matches, drop the record. No second output.

Where renameat2(RENAME_NOREPLACE) is missing, publishing is a hard link plus unlink of T;
then T present with a link count above one also means published.

The records share a tmpfs with the inbox. When raw files fill it, no record could be
written, so no input would be delivered and deleted, and nothing would ever free the space:
the daemon would wait forever. A small reserve file, made while there is room and kept
across restarts, is given up on the first "no space" so deliveries (each of which frees
its input) go on; it is made again once there is room.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgeguard.sinks.fileops import replace_file, write_new

logger = logging.getLogger(__name__)

WRITING = "writing"
PUBLISHING = "publishing"
# Room for a few records (each takes a page, two while it is replaced) per worker.
RESERVE_BYTES = 64 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Identity:
    """Which file an inbox name held when it was read: a replaced file differs here."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Record:
    id: str
    inbox: str
    identity: Identity
    tmp: str
    phase: str = WRITING
    final: str = ""
    sidecar: str | None = None
    sidecar_tmp: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Record:
        raw = json.loads(data)
        raw["identity"] = Identity(**raw["identity"])
        return cls(**raw)


class Journal:
    """One small JSON file per delivery in flight, replaced atomically at each phase.

    ``reserve``: a file of ``RESERVE_BYTES`` on the records' file system (outside
    ``folder``), removed to make room when a record meets a full file system; None for none.
    """

    def __init__(self, folder: Path, *, reserve: Path | None = None) -> None:
        self.folder = folder
        self.reserve = reserve
        self._reserve_lock = threading.Lock()
        self._reserve_gone = reserve is not None

    def open(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._restock()

    def _restock(self) -> None:
        """Make the reserve if it is missing and there is room (else try again later)."""
        if self.reserve is None:
            return
        with self._reserve_lock:
            try:
                if os.lstat(self.reserve).st_size == RESERVE_BYTES:
                    self._reserve_gone = False
                    return
                os.unlink(self.reserve)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.debug("journal: reserve not checked: %s", exc.strerror)
                return
            try:
                write_new(self.reserve, bytes(RESERVE_BYTES), mode=0o600)
            except OSError as exc:
                logger.debug("journal: reserve not made: %s", exc.strerror)
                return
            self._reserve_gone = False

    def _use_reserve(self) -> bool:
        """Remove the reserve to free its space; False when there was none to remove."""
        if self.reserve is None:
            return False
        with self._reserve_lock:
            try:
                os.unlink(self.reserve)
            except OSError:
                return False
            self._reserve_gone = True
        logger.warning("journal: no space left on %s (the inbox's tmpfs is full?); using "
                       "the reserve so deliveries, which free inbox space, go on",
                       self.folder.parent)
        return True

    def _path(self, rec: Record) -> Path:
        return self.folder / f"{rec.id}.json"

    def begin(self, *, inbox: Path, identity: Identity, tmp: Path,
              sidecar: str | None = None, sidecar_tmp: Path | None = None) -> Record:
        rec = Record(id=uuid.uuid4().hex, inbox=str(inbox), identity=identity, tmp=str(tmp),
                     sidecar=sidecar, sidecar_tmp=str(sidecar_tmp or ""))
        self.write(rec)
        return rec

    def advance(self, rec: Record, *, phase: str, final: str) -> Record:
        new = replace(rec, phase=phase, final=final)
        self.write(new)
        return new

    def write(self, rec: Record) -> None:
        try:
            replace_file(self._path(rec), rec.to_json(), mode=0o600)
        except OSError as exc:
            if exc.errno not in _NO_SPACE or not self._use_reserve():
                raise
            replace_file(self._path(rec), rec.to_json(), mode=0o600)

    def drop(self, rec: Record) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(rec))
        if self._reserve_gone:
            self._restock()

    def records(self) -> list[Record]:
        """Every record left behind; unreadable ones are logged and removed."""
        found: list[Record] = []
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return found
        for name in names:
            path = self.folder / name
            if name.startswith(".") and name.endswith(".tmp"):
                # A record replacement cut short; the previous version (if any) stands.
                path.unlink(missing_ok=True)
                continue
            if not name.endswith(".json"):
                continue
            try:
                found.append(Record.from_json(path.read_bytes()))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                logger.error("journal: unreadable record %s removed: %s", name, exc)
                path.unlink(missing_ok=True)
        return found
