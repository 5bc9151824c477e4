"""File-system helpers: atomic no-overwrite writes, collision-free names.

``atomic_write`` is how anything reaches the outbox: the bytes go to a hidden temporary
file in the same folder (``.NAME.<hex>.tmp``), are fsync'ed, and only then get their real
name, with a link-style rename that never replaces an existing file; the folder is fsync'ed
last. A reader therefore sees either nothing or the complete file, and a crash leaves at
most a hidden temporary file, which :func:`remove_stale_temps` sweeps at start-up.

The tmpfs checks are in :mod:`edgeguard.mounts`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from edgeguard.errors import OutputError

logger = logging.getLogger(__name__)

_TEMP_RE: Final = re.compile(r"^\..*\.[0-9a-f]{16}\.tmp$")
# link(2) errors that mean "this file system has no hard links", not "you may not".
_NO_LINK: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS,
                             errno.EMLINK, errno.EXDEV})
_AT_FDCWD: Final = -100
_RENAME_NOREPLACE: Final = 1


# ----------------------------------------------------------------------------- writing


def _reason(exc: OSError, label: str) -> str:
    code = exc.errno
    if code == errno.ENOSPC:
        return f"no space left on {label} device"
    if code == errno.EDQUOT:
        return f"disk quota exceeded on {label} device"
    if code == errno.EROFS:
        return f"{label} is on a read-only file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied writing to {label}"
    if code == errno.ENOENT:
        return f"{label} folder does not exist"
    if code == errno.ENOTDIR:
        return f"{label} path is not a folder"
    if code == errno.ENAMETOOLONG:
        return f"file name too long for {label}"
    if code == errno.EIO:
        return f"I/O error writing to {label}"
    return f"cannot write to {label}: {exc.strerror or exc}"


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def _temp_path(folder: Path, name: str) -> Path:
    # Keep well under NAME_MAX (255 bytes) whatever the final name's length.
    stem = os.fsencode(name)[:150].decode(errors="ignore") or "out"
    return folder / f".{stem}.{secrets.token_hex(8)}.tmp"


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove temporary file %s: %s", path, exc.strerror)


def _write_temp(folder: Path, name: str, data: bytes, *, mode: int,
                fsync: Callable[[int], None]) -> Path:
    """Write ``data`` to a new hidden file in ``folder``, fsync'ed; return its path."""
    tmp = _temp_path(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            # The file is complete and visible; only its durability across a power cut is
            # in doubt. Reporting failure now would make the caller write a duplicate.
            logger.warning("could not fsync folder %s: %s", folder, exc.strerror)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _renameat2_noreplace(src: Path, dst: Path) -> bool:
    """rename(2) that fails with EEXIST if ``dst`` exists; False if the kernel/fs lacks it."""
    try:
        fn = _libc().renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), str(dst))
    raise OSError(code, os.strerror(code), str(dst))


def rename_noreplace(src: Path, dst: Path, *,
                     link: Callable[[Path, Path], None] = os.link) -> None:
    """Give file ``src`` the name ``dst``, never replacing an existing ``dst``.

    ``link(2)`` then ``unlink(2)`` where the file system has hard links (ext4, tmpfs, btrfs,
    xfs, f2fs, NFS); else ``renameat2(RENAME_NOREPLACE)`` (vfat, exFAT, CIFS); else, on a
    kernel without it, a check-then-rename that a concurrent writer could race. Raises
    ``FileExistsError`` if ``dst`` exists, ``OSError`` for anything else. ``src`` is gone
    afterwards on success.
    """
    try:
        link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if not _renameat2_noreplace(src, dst):
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
            logger.debug("no link or renameat2 here; plain rename to %s", dst)
            os.rename(src, dst)
        return
    _remove(src)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, label: str = "outbox",
                 fsync: Callable[[int], None] = os.fsync) -> None:
    """Write ``data`` to ``path`` so a reader sees nothing or the whole file.

    Never overwrites: raises ``FileExistsError`` if ``path`` exists (see
    :func:`write_unique` for picking a free name). Any other failure removes the temporary
    file and raises :class:`OutputError` with a one-line reason naming ``label`` ("no space
    left on outbox device"). ``fsync`` is injectable for tests.
    """
    path = Path(path)
    _check_name(path.name)
    try:
        tmp = _write_temp(path.parent, path.name, data, mode=mode, fsync=fsync)
    except OSError as exc:
        raise OutputError(_reason(exc, label)) from exc
    try:
        rename_noreplace(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise OutputError(_reason(exc, label)) from exc
    finally:
        _remove(tmp)  # already gone after a successful rename
    _fsync_dir(path.parent)


def candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem-1.ext``, ``stem-2.ext``, ... (the suffix is the last one)."""
    _check_name(name)
    p = Path(name)
    stem, suffix = (p.stem, p.suffix) if p.stem else (name, "")
    yield name
    i = 1
    while True:
        yield f"{stem}-{i}{suffix}"
        i += 1


def unique_path(folder: Path, name: str) -> Path:
    """The first of :func:`candidate_names` not present in ``folder`` (racy: a hint only)."""
    for candidate in candidate_names(name):
        path = Path(folder) / candidate
        if not os.path.lexists(path):
            return path
    raise AssertionError("unreachable")  # pragma: no cover


def write_unique(folder: Path, stem: str, suffix: str, data: bytes, *, mode: int = 0o644,
                 label: str = "outbox", max_tries: int = 10_000,
                 fsync: Callable[[int], None] = os.fsync) -> Path:
    """Atomically write ``data`` as ``stem+suffix`` in ``folder``, or ``stem-N+suffix``.

    The data is written and fsync'ed once; then each free-looking name is claimed with
    :func:`rename_noreplace`, moving on when another writer got there first. Returns the
    path written. Raises :class:`OutputError` like :func:`atomic_write`.
    """
    folder = Path(folder)
    name = f"{stem}{suffix}"
    _check_name(name)
    try:
        tmp = _write_temp(folder, name, data, mode=mode, fsync=fsync)
    except OSError as exc:
        raise OutputError(_reason(exc, label)) from exc
    try:
        return claim_free_name(tmp, folder, name, label=label, max_tries=max_tries)
    finally:
        _remove(tmp)  # gone already on success


def claim_free_name(tmp: Path, folder: Path, name: str, *, label: str,
                    max_tries: int = 10_000) -> Path:
    """Rename the complete file ``tmp`` to ``name`` in ``folder``, or ``name-N`` when taken,
    never replacing a file (another writer may claim a name first: the next is tried).
    Returns the path; raises :class:`OutputError` naming ``label``."""
    for tries, candidate in enumerate(candidate_names(name)):
        if tries >= max_tries:
            raise OutputError(f"no free file name in {label} after {max_tries} tries")
        path = folder / candidate
        if os.path.lexists(path):
            continue
        try:
            rename_noreplace(tmp, path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(_reason(exc, label)) from exc
        _fsync_dir(folder)
        return path
    raise AssertionError("unreachable")  # pragma: no cover


def remove_stale_temps(folder: Path, pattern: re.Pattern[str] = _TEMP_RE,
                       what: str = "unfinished temporary files") -> int:
    """Delete temporary files an interrupted writer left in ``folder``.

    Call at start-up, before any writer runs. Only regular files whose names match
    ``pattern`` (by default :func:`atomic_write`'s temporaries) are touched. Returns how
    many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    if removed:
        logger.info("removed %d %s from %s", removed, what, folder)
    return removed
