"""The one file-writing layer: every file EdgeGuard publishes goes through here.

A file is published in three steps, each one system call with a documented failure mode,
so a crash between two of them leaves a state the next start can settle:

1. write it under a hidden temporary name in its final folder (:func:`temp_path`: the
   one prefix ``.edgeguard-``), created exclusively and fsync'ed (:func:`fill_new`,
   :func:`write_new`);
2. give it a free final name (:func:`publish`: ``name``, then ``stem-1.ext``,
   ``stem-2.ext``, ... by the one rule :func:`candidate_name`) with a rename that never
   replaces a file (:func:`rename_noreplace`);
3. fsync the folder (:func:`fsync_dir`).

A reader sees the whole file or nothing; a crash leaves at most a temporary file, which
:func:`sweep_leftovers` removes at the next start (the daemon sweeps the outbox before any
worker or the camera starts; the web service sweeps the inbox it uploads into).

:func:`rename_noreplace` tries renameat2(RENAME_NOREPLACE) first: with it the temporary
name disappears in the same instant the final name appears, so after a crash "temporary
file gone" alone proves the output was published (the daemon's journal relies on this). A
hard link leaves both names for a moment, and if a consumer takes the output away before
the restart, a published delivery would look unpublished and be redone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import BinaryIO, Final, TypeVar

from edgeguard.errors import OutputError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Longest file name (bytes) on Linux file systems; an inbox name may use all of it, so a
# name the sinks derive from it (a "-1" collision suffix, ".json", ".reason") is shortened.
NAME_MAX: Final = 255
TMP_PREFIX: Final = ".edgeguard-"
MAX_COLLISIONS: Final = 10_000
# Temporary names of versions before the one prefix: still swept, so an upgrade does not
# strand what a crash of the old version left (a camera still, a video segment, an upload).
_LEGACY_TEMPS: Final = re.compile(
    r"^\.cam-.*\.[0-9a-f]{16}(\.tmp|\.part\.(mp4|mkv))$|^\.upload-[0-9a-f]{16}\.part$")
_AT_FDCWD: Final = -100
_RENAME_NOREPLACE: Final = 1
# renameat2 errors that mean "not on this kernel or file system", not "no".
_NO_RENAMEAT2: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP,
                                  errno.EOPNOTSUPP})
# link(2) errors that mean "this file system has no hard links", not "you may not".
_NO_LINK: Final = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS,
                             errno.EMLINK, errno.EXDEV})
# What a user is told when a write fails (reason()).
_REASONS: Final = {
    errno.ENOSPC: "no space left on {} device",
    errno.EDQUOT: "disk quota exceeded on {} device",
    errno.EROFS: "{} is on a read-only file system",
    errno.EACCES: "permission denied writing to {}",
    errno.EPERM: "permission denied writing to {}",
    errno.ENOENT: "{} folder does not exist",
    errno.ENOTDIR: "{} path is not a folder",
    errno.ENAMETOOLONG: "file name too long for {}",
    errno.EIO: "I/O error writing to {}",
    errno.EEXIST: "no free file name in {}",
}


# ----------------------------------------------------------------------------- names


def temp_path(folder: Path, suffix: str = ".tmp") -> Path:
    """A new hidden temporary name in ``folder``: ``.edgeguard-<16 hex><suffix>``.

    ``suffix`` is kept last (an encoder picks the container from it: ``.mp4``)."""
    return folder / f"{TMP_PREFIX}{secrets.token_hex(8)}{suffix}"


def is_leftover(name: str) -> bool:
    """A temporary name of ours (or of an older version) that only a crash leaves."""
    return name.startswith(TMP_PREFIX) or _LEGACY_TEMPS.match(name) is not None


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


def check_name(name: str) -> None:
    """ValueError unless ``name`` is one plain file name."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a plain file name: {name!r}")


def candidate_name(name: str, n: int, limit: int = NAME_MAX) -> str:
    """The ``n``-th name tried for ``name``: itself, then ``stem-n.ext`` (the suffix is
    the last one: ``img.tar-1.gz``), the stem shortened to fit ``limit`` bytes (an
    over-long name must not look like an outage)."""
    p = PurePath(name)
    stem, suffix = (p.stem, p.suffix) if p.stem else (name, "")
    return fit_name(stem, suffix if n == 0 else f"-{n}{suffix}", limit)


# ----------------------------------------------------------------------------- system calls


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2 (glibc >= 2.28), bound on first use; None where it is missing."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _link(src: Path, dst: Path) -> None:
    os.link(src, dst, follow_symlinks=False)


def rename_noreplace(src: Path, dst: Path, *,
                     link: Callable[[Path, Path], None] = _link) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (FileExistsError then).

    renameat2(RENAME_NOREPLACE) where the kernel and file system have it (ext4, xfs,
    btrfs, tmpfs, f2fs). Elsewhere a hard link plus unlink of the source, which never
    replaces either but briefly shows the file under both names; where there are no hard
    links either (vfat on an old kernel), a check-then-rename that a concurrent writer
    could race. Returns True when the rename was atomic, False when a link was used.
    A symbolic link or device node is moved itself, never followed.
    """
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in _NO_RENAMEAT2:
            raise OSError(err, os.strerror(err), str(dst))
    try:
        link(src, dst)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        logger.debug("no renameat2 or link here; plain rename to %s", dst)
        os.rename(src, dst)
        return True
    os.unlink(src)
    return False


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside ``folder`` durable.

    Never raises: the file is complete and visible already; only its durability across a
    power cut is in doubt, and reporting failure now would make the caller write it twice.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            logger.warning("could not fsync folder %s: %s", folder, exc.strerror)


def remove_quietly(path: Path) -> bool:
    """Remove ``path`` if it is there; False (and a warning) when it cannot be removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("cannot remove temporary file %s: %s", path, exc.strerror)
        return False
    return True


# ----------------------------------------------------------------------------- writing


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


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data`` (temporary name, fsync, rename): for
    state files that are rewritten in place, never for outputs."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    write_new(tmp, data, mode=mode)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- publishing


def publish(src: Path, folder: Path, name: str, *, limit: int = NAME_MAX,
            taken: Callable[[Path], bool] = os.path.lexists,
            before: Callable[[Path], None] | None = None,
            undo: Callable[[Path], None] | None = None,
            max_tries: int = MAX_COLLISIONS) -> Path:
    """Give the complete file ``src`` a free name in ``folder`` and return it.

    The names tried are :func:`candidate_name`'s; one is skipped when ``taken`` says so
    (another folder may have to be free too), when ``before`` (called with the name just
    before the rename: a journal entry, a file beside it) raises FileExistsError, or when
    another writer claims it first. ``undo`` is called with the name when the rename
    fails after ``before``. The folder is fsync'ed after the rename. Raises
    FileExistsError after ``max_tries`` names, OSError for anything else (``src`` is then
    still there, for the caller to remove or keep).
    """
    check_name(name)
    for n in range(max_tries):
        final = folder / candidate_name(name, n, limit)
        if taken(final):
            continue
        if before is not None:
            try:
                before(final)
            except FileExistsError:
                continue
        try:
            rename_noreplace(src, final)
        except OSError as exc:
            if undo is not None:
                undo(final)
            if isinstance(exc, FileExistsError):
                continue
            raise
        fsync_dir(folder)
        return final
    raise FileExistsError(errno.EEXIST, f"no free file name after {max_tries} tries",
                          str(folder / name))


def publish_bytes(data: bytes, folder: Path, name: str, *, mode: int = 0o644,
                  label: str = "outbox", max_tries: int = MAX_COLLISIONS) -> Path:
    """Write ``data`` to a temporary file in ``folder`` and :func:`publish` it as ``name``
    (or ``stem-N.ext``); the path written.

    Raises :class:`OutputError` with a one-line reason naming ``label`` ("no space left on
    outbox device"), nothing left behind when the file system allows its removal.
    """
    check_name(name)
    tmp = temp_path(folder)
    try:
        write_new(tmp, data, mode=mode)
        return publish(tmp, folder, name, max_tries=max_tries)
    except OSError as exc:
        raise OutputError(reason(exc, label)) from exc
    finally:
        remove_quietly(tmp)  # gone already after a publish


def reason(exc: OSError, label: str) -> str:
    """A one-line reason for a failed write to ``label`` that a user can act on."""
    template = _REASONS.get(exc.errno or 0)
    return template.format(label) if template else \
        f"cannot write to {label}: {exc.strerror or exc}"


def sweep_leftovers(folder: Path) -> int:
    """Remove the temporary files a crash left in ``folder`` and its subfolders.

    Call at start, before any writer runs: a writer's own temporary file looks the same.
    Only regular files with :func:`is_leftover` names are touched; hidden folders and
    folders that cannot be read are passed over. Returns how many were removed.
    """
    removed = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root, name)
            if is_leftover(name) and not path.is_symlink() and path.is_file() \
                    and remove_quietly(path):
                removed += 1
    if removed:
        logger.info("removed %d unfinished temporary file(s) from %s", removed, folder)
    return removed
