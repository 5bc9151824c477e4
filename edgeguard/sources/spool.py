"""The spool: every arrival in the shared inbox is claimed at once into a private folder.

The inbox is shared by everyone in the drop group. A dropper's tools choose the modes of
what they write (rsync and scp keep the source's, cp takes the umask, a Samba share its
create mask), so a file left in the inbox could be opened by any other member who knows or
guesses its name, and a folder made by ``rsync -r`` belongs to the dropper, who alone may
take files out of it. So the daemon does not process files where they land: it renames each
one, as soon as inotify reports it (created, closed or moved in) and again on every rescan,
into the spool (``<inbox>.spool``, 0700, the service's own, on the same tmpfs), keeping its
path below the inbox. From then on nobody but the service can reach it; the daemon queues,
processes, delivers and fails files from the spool, which is rescanned at start like the
inbox: a rename is atomic, so each file is in exactly one of the two places.

A file is claimed while its writer may still have it open: the writer keeps writing
through its descriptor into the same inode, now in the spool, and the daemon takes it when
no writer has it open any more (a read lease proves that; see :func:`inbox.writer_has_open`)
and its close event arrives. Hidden and partial names (``.x``, ``x.part``, ``x.tmp``,
``x~``) are never claimed: rsync, Samba and the README's scp recipe write under such a name
and rename when done, and claiming the temporary file would break that rename. rsync
creates its temporary files 0600, so they are private while being written.

Folders: a file in a subfolder is claimed into the same subfolder of the spool. Where the
service may not take files out of a dropper's folder (``drwxr-xr-x alice``) it adds an ACL
entry for itself (CAP_FOWNER, see :mod:`edgeguard.sources.acl`), and likewise makes a file
it cannot read readable to itself; owner, group and others keep what they had. A subfolder
of the inbox is removed once it is empty and has not changed for ``stable_s`` (the same
stability rule as for files: a writer that is still filling it changes it); the inbox
itself is never removed. Empty folders of the spool are removed once their files are done.
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
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
)

from edgeguard import lognames
from edgeguard.sinks.fileops import rename_noreplace
from edgeguard.sources import acl
from edgeguard.sources.inbox import FolderWatch, is_ignored, is_ignored_name, is_young

logger = logging.getLogger(__name__)

SPOOL_MODE = 0o700
_DENIED = (errno.EACCES, errno.EPERM)


def spool_for(inbox: Path) -> Path:
    """The spool beside ``inbox`` (same parent, so on the same tmpfs in every layout the
    daemon accepts: failed/ defaults to a sibling too)."""
    return inbox.with_name(inbox.name + ".spool")


class InboxFolders:
    """Lists the inbox's and the spool's folders for the claimer: bottom-up, hidden names
    left out, no link followed; a dropper's folder the service cannot list is opened to it
    first (an ACL entry); each folder's problem is logged once, its name hidden when
    ``hide_names`` (daemon.hide_filenames)."""

    def __init__(self, inbox: Path, spool: Path, *, hide_names: bool, uid: int,
                 grant: Callable[[Path, int, int], None]) -> None:
        self.inbox = inbox
        self.spool = spool
        self.hide_names = hide_names
        self._uid = uid
        self._grant = grant
        self.warned: set[Path] = set()

    def shown(self, folder: Path) -> str:
        """The folder as a log line shows it (the daemon's rule: :func:`lognames.shown`);
        the inbox and the spool themselves are configured paths, never hidden."""
        hide = self.hide_names and folder not in (self.inbox, self.spool)
        return lognames.shown(str(folder), hide=hide)

    def warn_once(self, folder: Path, message: str) -> None:
        if folder not in self.warned:
            self.warned.add(folder)
            logger.warning("%s", message)

    def walk(self, root: Path) -> list[tuple[Path, list[str], list[str]]]:
        """(folder, non-folder names, folder names) bottom-up, hidden names left out, no
        link followed; a dropper's folder the service cannot list is opened to it first."""
        out: list[tuple[Path, list[str], list[str]]] = []
        stack = [root]
        while stack:
            folder = stack.pop()
            entries = self._list(folder)
            if entries is None:
                continue
            files: list[str] = []
            dirs: list[str] = []
            for entry in entries:
                if is_ignored_name(entry.name):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                (dirs if is_dir else files).append(entry.name)
            out.append((folder, files, dirs))
            stack.extend(folder / d for d in dirs)
        out.reverse()  # children before parents
        return out

    def _list(self, folder: Path) -> list[os.DirEntry[str]] | None:
        for attempt in (0, 1):
            try:
                with os.scandir(folder) as it:
                    return list(it)
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                return None
            except PermissionError as exc:
                if attempt or folder in (self.inbox, self.spool):
                    self.warn_once(folder, f"cannot list the inbox folder "
                                   f"{self.shown(folder)}: {exc.strerror}")
                    return None
                try:
                    self._grant(folder, self._uid, 7)
                except OSError as gexc:
                    self.warn_once(folder, f"cannot list the inbox folder "
                                   f"{self.shown(folder)}: {exc.strerror} "
                                   f"({gexc.strerror})")
                    return None
        return None


class Claimer(FolderWatch):
    """Moves arrivals from the inbox into the spool; removes emptied folders.

    Thread-safe: the watcher thread calls :meth:`claim`, the daemon's supervisor
    :meth:`sweep`. ``on_claim(spooled_path)`` is told of each claimed file.
    """

    def __init__(self, inbox: Path, spool: Path, *, stable_s: float,
                 on_claim: Callable[[Path], None] = lambda p: None,
                 hide_names: bool = False,
                 uid: int | None = None,
                 grant: Callable[[Path, int, int], None] = acl.grant,
                 now_ns: Callable[[], int] = time.time_ns,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self._inbox_real = os.path.realpath(inbox)  # the configured path may hold links
        self.spool = spool
        self.stable_s = stable_s
        self._on_claim = on_claim
        self._uid = os.geteuid() if uid is None else uid
        self._grant = grant
        self._now_ns = now_ns
        self._clock = clock
        self._lock = threading.Lock()
        # Folders to look at again soon (see tidy): inbox folders a file was claimed from
        # or that appeared, -> when; spool folders a file was claimed into.
        self._touched: dict[Path, float] = {}
        self._spool_dirs: set[Path] = set()
        # Arrivals whose name is still taken in the spool: claimed once it is free.
        self._waiting: set[Path] = set()
        self.folders = InboxFolders(inbox, spool, hide_names=hide_names, uid=self._uid,
                                    grant=grant)
        super().__init__(inbox, self, [FileCreatedEvent, FileClosedEvent, FileMovedEvent,
                                       DirCreatedEvent, DirMovedEvent])
        self.claimed = 0

    @property
    def hide_names(self) -> bool:
        """daemon.hide_filenames: no folder names in the log (changed by a reload)."""
        return self.folders.hide_names

    @hide_names.setter
    def hide_names(self, value: bool) -> None:
        self.folders.hide_names = value

    # -- claiming -----------------------------------------------------------------------------

    def claim(self, path: Path) -> Path | None:
        """Move ``path`` (in the inbox) into the spool; the spooled path, or None when it
        is not ours to take (ignored name, gone, a folder) or cannot be taken now (the same
        name is still in the spool: it is claimed by a later sweep)."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return None
        if not rel.parts or is_ignored(rel):
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        if os.path.realpath(path.parent) != os.path.join(self._inbox_real, *rel.parent.parts):
            # A folder on the way was swapped for a link since the event: a dropper must not
            # steer the service to files outside the inbox. (Narrows, does not close, the race.)
            logger.warning("spool: a folder in the inbox was replaced by a link; not followed")
            return None
        # Readable before it lands in the spool: the daemon's watcher there may hand it to a
        # worker the moment it arrives.
        self._readable(path)
        dest = self.spool / rel
        with self._lock:
            try:
                self._move(path, dest)
            except FileNotFoundError:
                return None  # taken already (a second event), or the writer renamed it
            except FileExistsError:
                logger.debug("spool: a file of the same name is still being processed")
                self._waiting.add(path)
                return None
            except OSError as exc:
                folder = self.folders.shown(path.parent)
                self.folders.warn_once(path.parent, f"cannot take files out of the inbox "
                                       f"folder {folder}: {exc.strerror}; they stay there "
                                       "until it is writable by the service")
                return None
            self.claimed += 1
            self._waiting.discard(path)
            if path.parent != self.inbox:
                self._touched[path.parent] = self._clock()
            if dest.parent != self.spool:
                self._spool_dirs.add(dest.parent)
        self._on_claim(dest)
        return dest

    def _move(self, path: Path, dest: Path) -> None:
        if dest.parent != self.spool:
            self._make_spool_dirs(dest.parent)
        try:
            rename_noreplace(path, dest)
        except OSError as exc:
            if exc.errno not in _DENIED:
                raise
            # A dropper's folder: give the service the right to take files out of it.
            self._grant(path.parent, self._uid, 7)
            rename_noreplace(path, dest)

    def _make_spool_dirs(self, folder: Path) -> None:
        missing = []
        d = folder
        while d != self.spool and not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, SPOOL_MODE)

    def _readable(self, path: Path) -> None:
        """Let the service read a claimed file whatever mode its writer gave it."""
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or os.access(path, os.R_OK):
                return
            self._grant(path, self._uid, 4)
        except OSError as exc:
            # The daemon's open then fails and says why (the file goes to failed/).
            logger.debug("spool: cannot make a claimed file readable: %s", exc.strerror)

    # -- sweeping -----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Claim everything the inbox holds; remove emptied folders. Returns the number of
        files claimed (what events missed: at start, after a queue overflow)."""
        claimed = 0
        for folder, files, subfolders in self.folders.walk(self.inbox):
            for name in files:
                if self.claim(folder / name) is not None:
                    claimed += 1
            del subfolders  # walked already (bottom-up)
            if folder != self.inbox:
                self._remove_if_settled(folder)
        with self._lock:
            for folder, files, _ in self.folders.walk(self.spool):
                if folder != self.spool and not files:
                    with contextlib.suppress(OSError):
                        os.rmdir(folder)  # only if empty: its subfolders went first
        return claimed

    def tidy(self) -> None:
        """Cheap, every supervisor tick: claim arrivals that waited for their name to be
        free in the spool; remove the inbox folders that files were claimed from (or that
        appeared) once empty and settled, and emptied spool folders; all without waiting
        for the next full :meth:`sweep`."""
        with self._lock:
            free = [p for p in self._waiting
                    if not os.path.lexists(self.spool / p.relative_to(self.inbox))]
            self._waiting.difference_update(free)
        for path in free:
            self.claim(path)  # its namesake is done (or gone: then it was never ours)
        now = self._clock()
        with self._lock:
            due = [f for f, t in self._touched.items() if now - t >= self.stable_s]
            for folder in due:
                del self._touched[folder]
        for folder in due:
            if folder == self.inbox or self.inbox not in folder.parents:
                continue
            if self._remove_if_settled(folder):
                with self._lock:
                    self._touched[folder.parent] = now  # it may be empty now too
            elif folder.is_dir() and not any(True for _ in _names(folder)):
                with self._lock:
                    self._touched[folder] = now  # empty but not settled yet: look again
        with self._lock:
            for folder in sorted(self._spool_dirs, key=lambda p: len(p.parts), reverse=True):
                try:
                    os.rmdir(folder)
                except OSError as exc:
                    if exc.errno == errno.ENOTEMPTY:
                        continue
                self._spool_dirs.discard(folder)
                if folder.parent != self.spool:
                    self._spool_dirs.add(folder.parent)

    def _remove_if_settled(self, folder: Path) -> bool:
        """rmdir an empty subfolder of the inbox that has settled (not changed for
        ``stable_s``: a writer filling it would have changed it). True when removed."""
        try:
            st = os.lstat(folder)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or is_young(st, self._now_ns(), self.stable_s):
            return False
        try:
            os.rmdir(folder)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                self.folders.warn_once(folder, "cannot remove the empty inbox folder "
                                       f"{self.folders.shown(folder)}: {exc.strerror}")
            return False
        self.folders.warned.discard(folder)
        logger.info("removed an emptied folder from the inbox")
        return True

    # -- the watcher --------------------------------------------------------------------------

    def dispatch(self, event: object) -> None:
        """watchdog events on the inbox: a file created, closed or moved in is claimed; a
        new folder is looked at again once settled (:meth:`tidy`)."""
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            raw = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            folder = Path(os.fsdecode(raw)) if raw else self.inbox
            try:
                rel = folder.relative_to(self.inbox)
            except ValueError:
                return
            if rel.parts and not is_ignored(rel):
                with self._lock:
                    self._touched[folder] = self._clock()
            return
        if isinstance(event, FileMovedEvent):
            raw = event.dest_path
        elif isinstance(event, (FileCreatedEvent, FileClosedEvent)):
            raw = event.src_path
        else:
            return
        if raw:
            self.claim(Path(os.fsdecode(raw)))



def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
