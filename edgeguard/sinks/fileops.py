"""The few file-system steps the sinks compose: create-new, rename-no-replace, fsync a folder.

Each is one system call with a documented failure mode, so the journal can reason about
the state a crash between two of them leaves.

:func:`edgeguard.fsutil.rename_noreplace` (used by ``edgeguard blur``) tries a hard link
first; the daemon's journal wants the opposite order. With renameat2(RENAME_NOREPLACE)
the temporary name disappears in the same instant the final name appears, so after a
crash "temporary file gone" alone proves the output was published. A link leaves both
names for a moment, and if a consumer takes the output away before the restart, a
published delivery looks unpublished and would be redone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
# Longest file name (bytes) on Linux file systems; an inbox name may use all of it, so a
# name the sinks derive from it (a "-1" collision suffix, ".json", ".reason") is shortened.
NAME_MAX = 255


def _load_renameat2() -> object | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` atomically unless ``dst`` exists (FileExistsError then).

    renameat2(RENAME_NOREPLACE) where the kernel and file system have it (ext4, xfs,
    btrfs, tmpfs, f2fs). Elsewhere a hard link plus unlink of the source, which never
    replaces either but briefly shows the file under both names. Returns True when the
    rename was atomic, False when the link fallback was used.
    """
    fn = _renameat2
    if fn is not None:
        rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),  # type: ignore[operator]
                _RENAME_NOREPLACE)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    os.link(src, dst, follow_symlinks=False)
    os.unlink(src)
    return False


def _cut_utf8(raw: bytes, limit: int) -> bytes:
    """``raw[:limit]`` without a multi-byte UTF-8 character split at the cut."""
    cut = raw[:limit]
    end = len(cut)
    k = 0  # continuation bytes (10xxxxxx) at the end
    while k < 3 and end - k - 1 >= 0 and cut[end - k - 1] & 0xC0 == 0x80:
        k += 1
    if end - k - 1 >= 0:
        lead = cut[end - k - 1]
        need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else \
            4 if lead >> 3 == 0b11110 else 1
        if need > k + 1:
            cut = cut[: end - k - 1]
    return cut


def fit_name(stem: str, tail: str, limit: int) -> str:
    """``stem + tail``, the stem shortened so the name takes at most ``limit`` bytes.

    Names are measured as the file system sees them (``os.fsencode``: UTF-8, with the
    original bytes of a name that is not UTF-8); a character is never cut in half. A
    ``tail`` (suffix) too long to keep is cut with the rest.
    """
    raw_stem, raw_tail = os.fsencode(stem), os.fsencode(tail)
    if len(raw_stem) + len(raw_tail) <= limit:
        return stem + tail
    room = limit - len(raw_tail)
    if room < 1:
        return os.fsdecode(_cut_utf8(raw_stem + raw_tail, limit))
    return os.fsdecode(_cut_utf8(raw_stem, room)) + tail


def fill_new(path: Path, fill: Callable[[BinaryIO], T], *, mode: int = 0o644) -> T:
    """Create ``path`` (which must not exist), let ``fill`` write it through a file object
    (readable and seekable, as a muxer needs), fsync it, and return what ``fill`` returned.

    On any error the partial file is removed (when the file system still allows it) and
    the error is raised.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "w+b", closefd=False) as fh:
            result = fill(fh)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return result


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` (which must not exist), write ``data`` in full and fsync it
    (:func:`fill_new`)."""
    fill_new(path, lambda fh: fh.write(data), mode=mode)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data`` (temporary name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    write_new(tmp, data, mode=mode)
    os.replace(tmp, path)
