"""Uploads: checked like the daemon checks them, streamed into the inbox, then followed.

An upload is written straight into the inbox (tmpfs) under a hidden temporary name,
``.edgeguard-<hex>.part`` (:func:`edgeguard.sinks.fileops.temp_path`), which the daemon
never takes (hidden and partial names are ignored). Nothing of it is held in memory beyond
one chunk, and nothing is written anywhere else. When the last byte is in, the file is
checked: the same header checks the daemon's decoder runs first, with the same reasons (not
an image, unsupported format, too many pixels, animated), plus the end-of-data checks the
daemon would otherwise find while decoding a truncated JPEG or PNG. A file that fails is
deleted and never reaches the daemon; one that passes is published
(:func:`edgeguard.sinks.fileops.publish`: a rename with RENAME_NOREPLACE), which the daemon
sees as a file moved in and takes at once.

Pixels are never decoded here (that would cost a Pi Zero 2 W as much memory as the daemon's
own decode); a file that passes these checks and still fails to decode ends in failed/ with
the daemon's reason, which the page shows from the daemon's state file.

The :class:`UploadTracker` follows each upload by name: its output in the outbox means done;
in the inbox, or claimed by the daemon into its private spool and not finished, means
queued; named among the daemon's recent failures, or gone while the daemon reports
itself idle, without an output, means failed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import mmap
import os
import re
import secrets
import struct
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from edgeguard import codec
from edgeguard.codec import decode
from edgeguard.errors import DecodeError
from edgeguard.sinks.fileops import publish, sweep_leftovers, temp_path
from edgeguard.sinks.outbox import output_rel
from edgeguard.sources.inbox import is_ignored_name

PART_SUFFIX = ".part"
# The group is the web user's own (the inbox is not setgid): nobody else's. The daemon claims
# the placed file into its spool and reads it there.
PART_MODE = 0o640
NAME_MAX_BYTES = 120
MAX_COLLISIONS = 1000
# Input suffixes that already name the sniffed format (an upload keeps its own spelling).
_SUFFIXES = {"jpeg": (".jpg", ".jpeg", ".jpe"), "png": (".png",), "webp": (".webp",),
             "bmp": (".bmp",), "tiff": (".tif", ".tiff"), "gif": (".gif",)}
_PNG_TRUNCATED = "truncated or corrupt PNG (image file is truncated)"


# -- checks -------------------------------------------------------------------------------


def check_image(fh: IO[bytes], *, max_pixels: int) -> tuple[str, int, int]:
    """Format, width and height, or the daemon's reason (an InputError) for refusing it.

    The header steps are the decoder's own (:mod:`edgeguard.codec.decode`), in its order, so the
    messages are the ones the daemon writes beside a failed file. ``fh`` must be seekable.
    """
    fh.seek(0)
    fmt = decode._sniff(decode._read_head(fh))
    img = decode._open_header(fh, fmt)
    width, height = int(img.size[0]), int(img.size[1])
    decode._check_size(width, height, max_pixels)
    decode._check_single_image(img, fmt)
    size = os.fstat(fh.fileno()).st_size if _has_fileno(fh) else _length(fh)
    if fmt == "jpeg" and img.mode in ("RGB", "L"):
        # The daemon decodes these with OpenCV after this same test (decode._decode_jpeg_cv2).
        with _view(fh, size) as data:
            if data.rfind(b"\xff\xd9") < decode._scan_start(data):
                raise DecodeError("truncated or corrupt JPEG (no end-of-image marker)")
    elif fmt == "png":
        _check_png_complete(fh, size)
    return fmt, width, height


def _has_fileno(fh: IO[bytes]) -> bool:
    try:
        fh.fileno()
    except (OSError, io.UnsupportedOperation):
        return False
    return True


def _length(fh: IO[bytes]) -> int:
    end = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    return end


@contextlib.contextmanager
def _view(fh: IO[bytes], size: int) -> Iterator[Any]:
    """The whole file as a bytes-like object: a read-only map of the tmpfs pages (no copy)."""
    if size == 0:
        yield b""
        return
    if _has_fileno(fh):
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm
        return
    fh.seek(0)
    yield fh.read()


def _check_png_complete(fh: IO[bytes], size: int) -> None:
    """Walk the chunk headers (seeking past the data) to IEND; refuse if the file ends first."""
    pos = 8
    while True:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            raise DecodeError(_PNG_TRUNCATED)
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IEND":
            return
        pos += 12 + length
        if pos > size:
            raise DecodeError(_PNG_TRUNCATED)


# -- names ----------------------------------------------------------------------------------


def _allowed(c: str) -> bool:
    return c.isalnum() or c in " ._-+()[],"


def safe_name(filename: str | None, fmt: str) -> str:
    """A plain inbox name for an upload: no folders, not hidden, the format's suffix.

    The browser's file name is only a suggestion: anything but letters, digits and a few
    punctuation marks becomes ``_``, leading dots go (a hidden name would never be taken),
    and a suffix naming the sniffed format is appended unless the name has one.
    """
    base = re.split(r"[/\\]", filename or "")[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(c if _allowed(c) else "_" for c in base).strip(" .")
    suffixes = _SUFFIXES[fmt]
    stem, dot, ext = base.rpartition(".")
    if dot and stem and "." + ext.lower() in suffixes:
        suffix = "." + ext
    else:
        stem, suffix = base, suffixes[0]
    stem = stem.encode("utf-8")[:NAME_MAX_BYTES].decode("utf-8", "ignore").strip(" .")
    name = (stem or "upload") + suffix
    if is_ignored_name(name):  # cannot happen with the rules above; never hand one over
        name = "upload" + suffixes[0]
    return name


# -- the inbox --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    name: str  # in the inbox
    output: str  # the redacted file's expected path, relative to the outbox
    format: str


class Inbox:
    """Writes uploads into the inbox; never reads or serves anything the daemon wrote."""

    def __init__(self, root: Path, outbox: Path, output_format: str) -> None:
        self.root = root
        self.outbox = outbox
        self.output_format = output_format

    def new_part(self) -> tuple[int, Path]:
        """A new hidden temporary file in the inbox, open for reading and writing."""
        # Read and write: the checks read the file back through this descriptor.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(16):
            path = temp_path(self.root, PART_SUFFIX)
            try:
                return os.open(path, flags, PART_MODE), path
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "no free temporary name in the inbox")

    def sweep_parts(self) -> int:
        """Remove temporary files a crashed web process left (the daemon never takes them)."""
        return sweep_leftovers(self.root)

    def expected_output(self, name: str, fmt: str) -> str:
        out_fmt = codec.output_format(fmt, self.output_format)
        return str(output_rel(Path(name), out_fmt, codec.suffix_for(out_fmt)))

    def place(self, part: Path, wanted: str, fmt: str) -> Placed:
        """Rename ``part`` into the inbox under ``wanted`` or ``wanted-N``.

        The name is chosen so that neither the inbox nor the outbox holds it yet: the
        daemon's output then gets exactly the expected name, which is how it is followed.
        """
        def taken(path: Path) -> bool:
            return (os.path.lexists(path)
                    or os.path.lexists(self.outbox / self.expected_output(path.name, fmt)))

        name = publish(part, self.root, wanted, taken=taken, max_tries=MAX_COLLISIONS).name
        return Placed(name, self.expected_output(name, fmt), fmt)


def _idle_since(state: dict[str, Any] | None, at: float) -> bool:
    """The daemon's state, written after ``at``, shows nothing queued or in progress."""
    if not state:
        return False
    updated = state.get("updated_at")
    return (isinstance(updated, (int, float)) and updated > at
            and not state.get("queued") and not state.get("in_flight"))


# -- following uploads ------------------------------------------------------------------------


class UploadStatus(Enum):
    QUEUED = "queued"  # in the inbox: waiting for, or being redacted by, the daemon
    DONE = "done"  # the redacted copy is in the outbox
    FAILED = "failed"  # the daemon moved it to failed/
    REFUSED = "refused"  # refused here; it never reached the inbox


@dataclass
class Upload:
    id: str
    original: str  # the browser's file name, as shown back to the user
    status: UploadStatus
    at: float  # wall clock
    name: str | None = None
    output: str | None = None
    reason: str | None = None
    gone_at: float | None = None  # monotonic: when it left the inbox without an output

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.original, "status": self.status.value,
                "name": self.name, "output": self.output if self.status is UploadStatus.DONE
                else None, "reason": self.reason, "at": self.at}


GENERIC_FAILURE = ("the daemon could not redact it (its reason is in `journalctl -u "
                   "edgeguard`)")


@dataclass
class UploadTracker:
    """The page's recent uploads (the newest ``keep``), in memory."""

    inbox: Path
    outbox: Path
    keep: int = 200
    # How long a failure waits for its reason to show up in the daemon's state file (written
    # every second; the wait is for a daemon too busy to write it, or one that hides names).
    reason_wait_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _items: collections.OrderedDict[str, Upload] = field(
        default_factory=collections.OrderedDict)

    def _add(self, upload: Upload) -> Upload:
        self._items[upload.id] = upload
        while len(self._items) > self.keep:
            self._items.popitem(last=False)
        return upload

    def refused(self, original: str, reason: str) -> Upload:
        return self._add(Upload(secrets.token_hex(6), original, UploadStatus.REFUSED, self.wall(),
                                reason=reason))

    def queued(self, original: str, placed: Placed) -> Upload:
        return self._add(Upload(secrets.token_hex(6), original, UploadStatus.QUEUED, self.wall(),
                                name=placed.name, output=placed.output))

    def waiting(self) -> int:
        return sum(1 for u in self._items.values() if u.status is UploadStatus.QUEUED)

    def refresh(self, state: dict[str, Any] | None) -> None:
        """Move uploads on from what the inbox, the outbox and the state file show."""
        for u in self._items.values():
            if (u.status in (UploadStatus.QUEUED, UploadStatus.FAILED) and u.output is not None
                    and os.path.lexists(self.outbox / u.output)):
                u.status, u.reason = UploadStatus.DONE, None
                continue
            if u.status is UploadStatus.QUEUED and u.name is not None:
                if os.path.lexists(self.inbox / u.name):
                    continue
                # The daemon claims each arrival into its private spool at once, so gone
                # from the inbox means taken, not finished: it failed once the daemon
                # names it among its failures, or reports itself idle in a state written
                # after the upload (a late output still turns it into done, above).
                if self._listed_failure(u, state) is None and not _idle_since(state, u.at):
                    continue
                u.status = UploadStatus.FAILED
                u.gone_at = self.clock()
            if u.status is UploadStatus.FAILED and u.reason is None:
                u.reason = self._reason(u, state)

    def _reason(self, u: Upload, state: dict[str, Any] | None) -> str | None:
        """The daemon's reason for this upload from its state file's recent failures, or
        the generic one once it has waited ``reason_wait_s`` for it."""
        listed = self._listed_failure(u, state)
        if listed is not None:
            return listed
        if u.gone_at is not None and self.clock() - u.gone_at >= self.reason_wait_s:
            return GENERIC_FAILURE
        return None  # asked again at the next poll

    def _listed_failure(self, u: Upload, state: dict[str, Any] | None) -> str | None:
        """This upload's reason in the state file's recent failures (by name, newest
        first, and not older than the upload: a name can be reused)."""
        recent = state.get("recent_failures") if state else None
        if isinstance(recent, list):
            for entry in reversed(recent):
                if (isinstance(entry, dict) and entry.get("name") == u.name
                        and isinstance(entry.get("reason"), str)
                        and isinstance(entry.get("at"), (int, float))
                        and entry["at"] >= u.at - 1.0):
                    return str(entry["reason"])
        return None

    def items(self) -> list[Upload]:
        return list(reversed(self._items.values()))

    def failures(self, limit: int) -> list[Upload]:
        out = [u for u in self.items() if u.status in (UploadStatus.FAILED, UploadStatus.REFUSED)]
        return out[:limit]
