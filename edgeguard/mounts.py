"""Which file system holds a path: the tmpfs check behind "raw pixels never touch
persistent storage".

``is_tmpfs`` reads ``/proc/self/mountinfo`` (the mount that holds the resolved path: longest
mount point prefix, the last of stacked mounts) and falls back to ``statfs(2)``'s magic
number.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

TMPFS_MAGIC: Final = 0x01021994
RAMFS_MAGIC: Final = 0x858458F6
_MAGIC_NAMES: Final = {
    TMPFS_MAGIC: "tmpfs",
    RAMFS_MAGIC: "ramfs",
    0xEF53: "ext4",
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0xF2F52010: "f2fs",
    0x4D44: "vfat",
    0x2011BAB0: "exfat",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0x794C7630: "overlay",
    0x65735546: "fuse",
}
MOUNTINFO: Final = Path("/proc/self/mountinfo")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/self/mountinfo, the fields we use."""

    mount_point: str
    fstype: str
    source: str
    options: str


_OCTAL_RE: Final = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # The kernel escapes space, tab, newline and backslash as \040, \011, \012, \134.
    return _OCTAL_RE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (proc(5)); malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(Mount(mount_point=_unescape(fields[4]), fstype=fields[sep + 1],
                                source=_unescape(fields[sep + 2]), options=fields[5]))
        except (ValueError, IndexError):
            continue
    return mounts


def mount_for(path: Path, *, mountinfo: str | None = None) -> Mount:
    """The mount holding ``path`` (resolved; it need not exist yet).

    ``mountinfo`` is the text of /proc/self/mountinfo, read when None. Raises ``OSError``
    if it cannot be read or no mount matches.
    """
    text = MOUNTINFO.read_text() if mountinfo is None else mountinfo
    target = os.path.realpath(path)
    best: Mount | None = None
    best_len = -1
    for mount in parse_mountinfo(text):
        mp = mount.mount_point
        inside = mp == "/" or target == mp or target.startswith(mp.rstrip("/") + "/")
        # ">=": of mounts stacked on one point, the last listed is the visible one.
        if inside and len(mp) >= best_len:
            best, best_len = mount, len(mp)
    if best is None:
        raise OSError(errno.ENOENT, "no mount found in mountinfo", str(path))
    return best


def statfs_magic(path: Path) -> int:
    """``f_type`` from statfs(2): the file-system magic number. ``path`` must exist."""
    libc = _libc()
    # struct statfs starts with f_type (a C long on every Linux ABI); the rest of the
    # buffer only has to be large enough (120 bytes on 64-bit, 64-84 on 32-bit).
    buf = ctypes.create_string_buffer(512)
    if libc.statfs(os.fsencode(path), buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def fs_type(path: Path) -> str:
    """The file-system type holding ``path`` ("tmpfs", "ext4", ...), from mountinfo.

    Falls back to statfs(2) (names for common magics, else the hex number) when mountinfo
    cannot be read, as in a chroot without /proc.
    """
    try:
        return mount_for(path).fstype
    except OSError as exc:
        logger.debug("mountinfo unavailable (%s); using statfs", exc)
    magic = statfs_magic(path)
    return _MAGIC_NAMES.get(magic, hex(magic))


def is_tmpfs(path: Path) -> bool:
    """True if ``path`` lives on tmpfs (RAM-backed, gone at power-off)."""
    return fs_type(path) == "tmpfs"
