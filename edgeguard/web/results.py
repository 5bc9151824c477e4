"""The outbox, read-only: list the redacted images and open one by its relative path.

Only files below the outbox are ever opened, and only images. A path from a URL is split
into plain names (no ``..``, no hidden names, no empty parts) and opened one component at
a time relative to the folder above it with ``O_NOFOLLOW``, so neither ``..`` nor a
symbolic link planted in the outbox can lead anywhere else (the inbox, failed/, /etc).
"""

from __future__ import annotations

import heapq
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 8
MAX_PARTS = MAX_DEPTH + 1
MAX_PATH_CHARS = 1024
# The formats the daemon writes, recognised from the first bytes; nothing else is served.
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
SNIFF_BYTES = 16
_SKIP_SUFFIXES = (".json", ".tmp", ".part", "~")


class NotFound(Exception):
    """No such image in the outbox (or the path is not one that may be served)."""


def content_type(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    return None


def split(rel: str) -> list[str]:
    """The plain names in ``rel``; NotFound for anything that could leave the outbox."""
    if not rel or len(rel) > MAX_PATH_CHARS or "\0" in rel or "\\" in rel:
        raise NotFound(rel)
    parts = rel.split("/")
    if len(parts) > MAX_PARTS:
        raise NotFound(rel)
    for part in parts:
        if not part or part in (".", "..") or part.startswith("."):
            raise NotFound(rel)
    return parts


@dataclass(frozen=True)
class Opened:
    fd: int
    size: int
    mtime: float
    content_type: str
    name: str


def open_result(outbox: Path, rel: str) -> Opened:
    """Open outbox image ``rel`` for reading; the caller closes ``fd``. NotFound otherwise."""
    parts = split(rel)
    try:
        fd = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise NotFound(rel) from None
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError:
                raise NotFound(rel) from None
            os.close(fd)
            fd = nxt
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                              | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            raise NotFound(rel) from None
    finally:
        os.close(fd)
    try:
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(rel)
        mime = content_type(os.pread(file_fd, SNIFF_BYTES, 0))
        if mime is None:
            raise NotFound(rel)
    except BaseException:
        os.close(file_fd)
        raise
    return Opened(file_fd, st.st_size, st.st_mtime, mime, parts[-1])


@dataclass(frozen=True)
class Result:
    path: str  # relative to the outbox, "/"-separated
    size: int
    mtime: float

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime}


def _listed(name: str) -> bool:
    return not name.startswith(".") and not name.lower().endswith(_SKIP_SUFFIXES)


def list_results(outbox: Path, limit: int) -> list[Result]:
    """The newest ``limit`` files in the outbox (subfolders too), newest first.

    Hidden names (the daemon's temporaries), sidecars and links are left out; what is
    listed may still be refused by :func:`open_result` if it is not an image.
    """
    found: list[tuple[float, str, int]] = []
    stack: list[tuple[str, str, int]] = [(str(outbox), "", 0)]
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            if not _listed(e.name):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = prefix + e.name
            if stat.S_ISDIR(st.st_mode):
                if depth + 1 < MAX_DEPTH:
                    stack.append((e.path, rel + "/", depth + 1))
            elif stat.S_ISREG(st.st_mode):
                item = (st.st_mtime, rel, st.st_size)
                if len(found) < limit:
                    heapq.heappush(found, item)
                else:
                    heapq.heappushpop(found, item)
    return [Result(rel, size, mtime) for mtime, rel, size in sorted(found, reverse=True)]
