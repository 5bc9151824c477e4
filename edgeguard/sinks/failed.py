"""failed/: raw inputs that could not be redacted (or were refused), each with a reason.

failed/ lives on the same tmpfs as the inbox (a start-up check), so moving a file there is
one rename: atomic, never a copy of raw pixels, and crash-safe without a journal. The
``NAME.reason`` text is written first; a crash between the two leaves the input in the
inbox (it is redone) and an orphan reason that :meth:`FailedSink.prune` removes.
Subfolders are mirrored; a name already taken gets a ``-1``, ``-2``... suffix, and a name
too long to take ``.reason`` beside it is shortened (the reason keeps the source name). When
the tmpfs is full, the raw file still moves (a rename needs no space) and its reason is only
in the log: refusing to move it would leave the input, and all work, stuck. Refused
entries (symbolic links, devices, FIFOs, sockets) move the same way: a rename moves the
link or node itself and never follows or opens it.

The folder is bounded: entries past ``max_count`` (oldest first) or older than
``max_age_s`` (by when they failed) are deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edgeguard.sinks.fileops import NAME_MAX, publish, write_new

logger = logging.getLogger(__name__)

REASON_SUFFIX = ".reason"
# A reason without its raw file is either a record in progress (milliseconds) or what a
# crash between the two steps left; past this age it is the latter.
_ORPHAN_GRACE_S = 60.0


@dataclass(frozen=True)
class Failure:
    path: Path
    reason_path: Path | None  # None: no space was left for it (the log has the reason)


def _reason_of(path: Path) -> Path:
    return path.with_name(path.name + REASON_SUFFIX)


class FailedSink:
    def __init__(self, root: Path, *, max_count: int, max_age_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.max_count = max_count
        self.max_age_s = max_age_s
        self._clock = clock
        # record() and prune() exclude each other: prune removes empty mirror folders
        # that a record in progress may just have created.
        self._lock = threading.Lock()

    def record(self, source: Path, rel: Path, reason: str) -> Failure:
        """Move ``source`` (inbox path ``rel``) into failed/ with ``reason`` beside it.

        Raises OSError when failed/ cannot take it; the input then stays queued.
        """
        with self._lock:
            return self._record(source, rel, reason)

    def _record(self, source: Path, rel: Path, reason: str) -> Failure:
        wanted = self.root / rel
        wanted.parent.mkdir(parents=True, exist_ok=True)
        when = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds")
        text = f"{reason}\nsource: {rel}\nfailed at: {when}\n"
        # surrogateescape: a name that is not UTF-8 is written back as its own bytes.
        data = text.encode(errors="surrogateescape")
        kept: Path | None = None

        def taken(target: Path) -> bool:
            return os.path.lexists(target) or os.path.lexists(_reason_of(target))

        def write_reason(target: Path) -> None:
            # The reason first: a crash before the move leaves only an orphan reason.
            nonlocal kept
            kept = _reason_of(target)
            try:
                write_new(kept, data, mode=0o600)
            except FileExistsError:
                kept = None
                raise
            except OSError as exc:
                kept = None
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                logger.warning("failed/: no space left for a .reason file; the reason is "
                               "in the log only")

        def drop_reason(target: Path) -> None:
            if kept is not None:
                kept.unlink(missing_ok=True)

        try:
            target = publish(source, wanted.parent, wanted.name,
                             limit=NAME_MAX - len(REASON_SUFFIX), taken=taken,
                             before=write_reason, undo=drop_reason)
        except FileExistsError as exc:
            raise FileExistsError(f"failed/: {exc.strerror} for {rel.name}") from exc
        return Failure(target, kept)

    def prune(self) -> int:
        """Apply the count and age bounds; returns how many entries were removed."""
        with self._lock:
            return self._prune()

    def _prune(self) -> int:
        entries: list[tuple[float, Path | None, Path | None]] = []
        folders: list[Path] = []
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    items = list(it)
            except OSError:
                continue
            names = {e.name: e for e in items}
            for e in items:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                    folders.append(Path(e.path))
                    continue
                if e.name.endswith(REASON_SUFFIX):
                    raw_name = e.name[: -len(REASON_SUFFIX)]
                    raw = Path(folder, raw_name) if raw_name in names else None
                    entries.append((st.st_mtime, raw, Path(e.path)))
                elif e.name + REASON_SUFFIX not in names and not e.name.startswith("."):
                    entries.append((st.st_mtime, Path(e.path), None))
        now = self._clock()
        entries.sort(key=lambda t: t[0], reverse=True)  # newest first
        removed = 0
        for i, (when, raw, reason) in enumerate(entries):
            orphan_reason = raw is None and reason is not None and now - when > _ORPHAN_GRACE_S
            if i < self.max_count and now - when <= self.max_age_s and not orphan_reason:
                continue
            for p in (raw, reason):
                if p is not None:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            removed += 1
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty mirrors go
        if removed:
            logger.info("failed/: removed %d old entries (bounds: %d entries, %d s)",
                        removed, self.max_count, self.max_age_s)
        return removed
