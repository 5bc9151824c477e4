"""The inbox: which names are taken, which are refused, and the inotify watcher.

The inbox folder is the queue. Nothing here holds file contents; the watcher only tells
the daemon which paths are ready, and a rescan (at start, periodically and whenever the
in-memory queue overflowed) finds anything an event did not announce.

A file is ready when
- its writer closed it (``FileClosedEvent``: IN_CLOSE_WRITE),
- it was renamed into place (``FileMovedEvent`` with a destination in the inbox; with
  ``generate_full_events=True`` a move in from another folder of the same file system is
  reported this way too, with an empty source), or
- it appeared without a writer (a hard link, a folder moved in, a missed event): it is
  tracked by :class:`Settler` until nobody has it open and its size and mtime have not
  changed for ``stable_s``.

Hidden names (``.name``, which covers rsync's and Samba's temporary files) and partial
names (``*.part``, ``*.tmp``, ``*~``) are never taken. Symbolic links, devices, FIFOs and
sockets are refused (never followed or opened); the daemon moves them to failed/ with a
reason, so that every entry that lands in the inbox ends as an output or a recorded
failure. Real subfolders are watched and mirrored into the outbox.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Self

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.inotify import InotifyObserver

logger = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".tmp")


def is_ignored_name(name: str) -> bool:
    """Hidden or partial names: never taken, whatever they contain."""
    if not name or name.startswith("."):
        return True
    if name.endswith("~"):
        return True
    return name.lower().endswith(PARTIAL_SUFFIXES)


def is_ignored(rel: Path) -> bool:
    """True when any component of ``rel`` (relative to the inbox) is hidden or partial."""
    return any(is_ignored_name(part) for part in rel.parts)


class Kind(Enum):
    REGULAR = "regular file"
    DIRECTORY = "folder"
    SYMLINK = "symbolic link"
    DEVICE = "device node"
    FIFO = "named pipe (FIFO)"
    SOCKET = "socket"
    OTHER = "special file"


def kind_of(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return Kind.REGULAR
    if stat.S_ISDIR(mode):
        return Kind.DIRECTORY
    if stat.S_ISLNK(mode):
        return Kind.SYMLINK
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return Kind.DEVICE
    if stat.S_ISFIFO(mode):
        return Kind.FIFO
    if stat.S_ISSOCK(mode):
        return Kind.SOCKET
    return Kind.OTHER


def refusal(kind: Kind) -> str | None:
    """Why an entry of this kind is refused, or None when it is taken (files, folders)."""
    if kind in (Kind.REGULAR, Kind.DIRECTORY):
        return None
    if kind is Kind.SYMLINK:
        return "refused: a symbolic link (links are never followed)"
    return f"refused: a {kind.value}, not a regular file"


def is_young(st: os.stat_result, now_ns: int, stable_s: float) -> bool:
    """Changed within ``stable_s``: maybe still being written.

    ctime counts as well as mtime: ``cp -p`` and ``scp -p`` set an old mtime, but
    nobody can set ctime, and every write or rename moves it.
    """
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    return now_ns - changed < int(stable_s * 1e9)


@dataclass(frozen=True)
class Found:
    """One inbox entry found by a scan: its path and its lstat."""

    path: Path
    st: os.stat_result


ScanDir = Callable[[str], "contextlib.AbstractContextManager[Iterator[os.DirEntry[str]]]"]


def scan(root: Path, *, listdir: ScanDir = os.scandir) -> Iterator[Found]:
    """Every entry below ``root`` that is not ignored, without following any link.

    Real subfolders are descended into and not reported; everything else (files and
    the entries to refuse) is. Entries that vanish while scanning are skipped.
    """
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with listdir(folder) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            continue
        except PermissionError as exc:
            logger.warning("inbox: cannot list a folder: %s", exc.strerror)
            continue
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            else:
                yield Found(Path(entry.path), st)


def oldest(found: Iterator[Found], limit: int) -> list[Found]:
    """The ``limit`` least recently changed entries: first in, first out, in O(limit) memory."""
    return heapq.nsmallest(limit, found, key=lambda f: (f.st.st_mtime_ns, str(f.path)))


class Settler:
    """Tracks files that appeared without a close: ready once unopened and unchanged.

    ``opened``/``closed`` count the IN_OPEN and IN_CLOSE_* events of a tracked path, so a
    writer that pauses longer than ``stable_s`` is waited for (its close is then the
    event that takes the file). Where a read lease can tell that nobody has the file open
    for writing (:func:`writer_has_open`: we own the file, or run as root) it is ready
    at its first look; otherwise it must keep its size and mtime for ``stable_s``.
    Thread-safe: the watcher thread feeds it and the daemon's supervisor polls :meth:`due`.
    """

    def __init__(self, stable_s: float, *, clock: Callable[[], float] = time.monotonic,
                 lstat: Callable[[Path], os.stat_result] = os.lstat,
                 writer_open: Callable[[Path], bool | None] | None = None) -> None:
        self.stable_s = stable_s
        self._clock = clock
        self._lstat = lstat
        self._writer_open = probe_writer if writer_open is None else writer_open
        self._lock = threading.Lock()
        # path -> [size, mtime_ns, since, opens]
        self._tracked: dict[Path, list[int | float]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._tracked)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return path in self._tracked

    def track(self, path: Path) -> None:
        with self._lock:
            if path not in self._tracked:
                self._tracked[path] = [-1, -1, self._clock(), 0]

    def opened(self, path: Path) -> None:
        with self._lock:
            entry = self._tracked.get(path)
            if entry is not None:
                entry[3] = int(entry[3]) + 1

    def closed(self, path: Path) -> None:
        with self._lock:
            entry = self._tracked.get(path)
            if entry is not None:
                # Our own probes open and close it too: counting only, no clock reset.
                entry[3] = max(0, int(entry[3]) - 1)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._tracked.pop(path, None)

    def due(self) -> list[Path]:
        """Paths that are ready now; they are no longer tracked. Vanished paths are dropped."""
        now = self._clock()
        ready: list[Path] = []
        with self._lock:
            items = list(self._tracked.items())
        for path, entry in items:
            try:
                st = self._lstat(path)
            except FileNotFoundError:
                self.forget(path)
                continue
            except OSError as exc:
                logger.debug("inbox: lstat failed while settling: %s", exc.strerror)
                continue
            with self._lock:
                if path not in self._tracked:
                    continue
                size, mtime_ns, since, opens = entry
                if not stat.S_ISREG(st.st_mode):
                    # Refused kinds need no settling.
                    del self._tracked[path]
                    ready.append(path)
                elif opens > 0:
                    continue
                elif (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                    entry[0], entry[1], entry[2] = st.st_size, st.st_mtime_ns, now
                    if self._writer_open(path) is False:  # known: nobody is writing
                        del self._tracked[path]
                        ready.append(path)
                elif now - since >= self.stable_s:
                    del self._tracked[path]
                    ready.append(path)
        return ready


def writer_has_open(fd: int) -> bool | None:
    """Whether some process has the file behind ``fd`` (opened read-only) open for writing.

    Linux refuses a read lease (F_SETLEASE F_RDLCK) with EAGAIN while anybody holds the
    file open for writing; that is the one race-free test for "the writer is done" we
    have. None when the answer is unknown: leases need the file's owner or CAP_LEASE,
    and can be switched off (/proc/sys/fs/leases-enable).
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return True
        return None
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def probe_writer(path: Path) -> bool | None:
    """:func:`writer_has_open` for a path (never following a link); None when unknown."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return writer_has_open(fd)
    finally:
        os.close(fd)


# -- the watcher ------------------------------------------------------------------------


class _Handler:
    """Turns watchdog events into ``ready(path)`` calls and :class:`Settler` updates.

    Runs on watchdog's observer thread; every call it makes is non-blocking.
    """

    def __init__(self, root: Path, ready: Callable[[Path], None], settler: Settler,
                 lstat: Callable[[Path], os.stat_result] = os.lstat) -> None:
        self.root = root
        self.ready = ready
        self.settler = settler
        self._lstat = lstat

    def _inside(self, raw: str | bytes) -> Path | None:
        if not raw:
            return None
        path = Path(os.fsdecode(raw))
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        if not rel.parts or is_ignored(rel):
            return None
        return path

    def dispatch(self, event: object) -> None:
        if isinstance(event, FileClosedEvent):
            path = self._inside(event.src_path)
            if path is not None:
                self.settler.forget(path)
                self.ready(path)
        elif isinstance(event, FileMovedEvent):
            # Source inside the inbox (a rename): forget it; destination: ready.
            src = self._inside(event.src_path)
            if src is not None:
                self.settler.forget(src)
            dest = self._inside(event.dest_path)
            if dest is not None:
                self.ready(dest)
        elif isinstance(event, FileCreatedEvent):
            path = self._inside(event.src_path)
            if path is None:
                return
            try:
                st = self._lstat(path)
            except OSError:
                return
            if stat.S_ISREG(st.st_mode):
                self.settler.track(path)
            else:
                self.ready(path)  # refused without waiting: nothing to settle
        elif isinstance(event, FileOpenedEvent):
            path = self._inside(event.src_path)
            if path is not None:
                self.settler.opened(path)
        elif isinstance(event, FileClosedNoWriteEvent):
            path = self._inside(event.src_path)
            if path is not None:
                self.settler.closed(path)
        elif isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # watchdog adds the watch and reports the folder's files as created
            # (recursive scheduling); a symlink to a folder is a file event, refused.
            return


class _StopNoiseFilter(logging.Filter):
    """watchdog 7 logs an ERROR when its emitter thread polls once more after stop();
    that is shutdown noise, not a fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


class FolderWatch:
    """An inotify watch on a folder tree (watchdog's InotifyObserver) that knows when it
    is lost. A context manager; ``handler`` gets the events of the ``events`` types."""

    def __init__(self, folder: Path, handler: object, events: list[type]) -> None:
        self._folder = folder
        self._watch_handler = handler
        self._events = events
        self._observer: object | None = None
        self._identity: tuple[int, int] = (0, 0)

    def start(self) -> None:
        observer = InotifyObserver(generate_full_events=True)
        observer.schedule(self._watch_handler, str(self._folder),  # type: ignore[arg-type]
                          recursive=True, event_filter=self._events)
        observer.daemon = True
        st = os.stat(self._folder)
        self._identity = (st.st_dev, st.st_ino)
        observer.start()
        self._observer = observer

    def alive(self) -> bool:
        """False once the watch is gone: the observer or its emitter stopped (the folder
        was deleted), or the folder's path now names another folder (it was replaced)."""
        observer = self._observer
        if observer is None or not observer.is_alive():  # type: ignore[attr-defined]
            return False
        if not all(e.is_alive() for e in observer.emitters):  # type: ignore[attr-defined]
            return False
        try:
            st = os.stat(self._folder)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def close(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            quiet = _StopNoiseFilter()
            emitter_log = logging.getLogger("watchdog.observers.inotify")
            emitter_log.addFilter(quiet)
            try:
                observer.stop()  # type: ignore[attr-defined]
                observer.join(timeout=5)  # type: ignore[attr-defined]
            finally:
                emitter_log.removeFilter(quiet)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InboxWatcher(FolderWatch):
    """inotify on the inbox tree. A context manager.

    ``ready(path)`` is called from the observer thread for every path that can be taken
    now; it must not block (the daemon's queue drops the hint when full, the file stays
    in the inbox and a rescan finds it).
    """

    def __init__(self, root: Path, *, ready: Callable[[Path], None], settler: Settler) -> None:
        self.root = root
        super().__init__(root, _Handler(root, ready, settler),
                         [FileClosedEvent, FileMovedEvent, FileCreatedEvent, FileOpenedEvent,
                          FileClosedNoWriteEvent, DirCreatedEvent, DirMovedEvent])
