"""POSIX access ACLs, just enough to let the service reach a dropper's file or folder.

The appliance's service holds CAP_FOWNER (and only inside its read-only sandbox, where the
writable paths are its own folders), which lets it set an ACL on a file it does not own. It
adds one entry for itself and changes nothing else: the owner, the owning group and others
keep exactly the access they had.

The xattr format is the kernel's ``posix_acl_xattr`` (include/uapi/linux/posix_acl_xattr.h):
a little-endian u32 version (2), then (u16 tag, u16 perm, u32 id) entries sorted by tag
and id.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")

Entries = dict[tuple[int, int], int]  # (tag, id) -> rwx bits


def parse(blob: bytes) -> Entries:
    if len(blob) < _HEADER.size or (len(blob) - _HEADER.size) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    (version,) = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise ValueError(f"POSIX ACL version {version}")
    out: Entries = {}
    for off in range(_HEADER.size, len(blob), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(blob, off)
        out[(tag, ident)] = perm & 7
    return out


def build(entries: Entries) -> bytes:
    parts = [_HEADER.pack(VERSION)]
    for (tag, ident), perm in sorted(entries.items()):
        parts.append(_ENTRY.pack(tag, perm & 7, ident))
    return b"".join(parts)


def from_mode(mode: int) -> Entries:
    """The minimal ACL that a file's permission bits are."""
    return {(USER_OBJ, UNDEFINED_ID): (mode >> 6) & 7,
            (GROUP_OBJ, UNDEFINED_ID): (mode >> 3) & 7,
            (OTHER, UNDEFINED_ID): mode & 7}


def with_user(entries: Entries, uid: int, perm: int) -> Entries:
    """``entries`` plus ``perm`` for the user ``uid``; the mask opens exactly as far as the
    named entries need (the owning group's own entry is kept, so it gains nothing)."""
    out = dict(entries)
    if (MASK, UNDEFINED_ID) not in out:
        # Without a mask the group bits were the owning group's: keep them there.
        out[(MASK, UNDEFINED_ID)] = out.get((GROUP_OBJ, UNDEFINED_ID), 0)
    out[(USER, uid)] = out.get((USER, uid), 0) | perm
    mask = 0
    for (tag, _), bits in out.items():
        if tag in (USER, GROUP_OBJ, GROUP):
            mask |= bits
    out[(MASK, UNDEFINED_ID)] = mask
    return out


def grant(path: Path, uid: int, perm: int) -> None:
    """Give the user ``uid`` ``perm`` (rwx bits) on ``path`` (never following a link).

    Raises OSError: EPERM without ownership or CAP_FOWNER, EOPNOTSUPP where the file
    system has no ACLs.
    """
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, "a symbolic link", str(path))
    try:
        entries = parse(os.getxattr(path, XATTR, follow_symlinks=False))
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        entries = from_mode(st.st_mode)
    os.setxattr(path, XATTR, build(with_user(entries, uid, perm)), follow_symlinks=False)
