"""Upload streaming: multipart file parts go from the socket straight into the inbox.

Each part is written to a temporary file in the inbox (tmpfs) chunk by chunk, checked with
the decoder's own header steps and renamed into place; the whole body's size and pace are
checked after every chunk (:class:`Body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from edgeguard.errors import InputError
from edgeguard.lognames import shown
from edgeguard.web import status, uploads
from edgeguard.web.context import (
    CHUNK,
    MB,
    PART_OVERHEAD,
    READ_IDLE_S,
    WebState,
    _error,
    _json,
    _state,
    too_large_reason,
)

logger = logging.getLogger(__name__)


# -- uploads ------------------------------------------------------------------------------


def _display_name(filename: str | None) -> str:
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    shown = "".join(c if c.isprintable() else "?" for c in base)[:200]
    return shown or "(no name)"


class Body:
    """The whole request body's limits, checked after every chunk: its total size (a
    chunked body has no Content-Length to check up front; any number of refused parts
    would otherwise be read and thrown away) and its pace."""

    def __init__(self, request: web.Request, budget: int, *, min_rate: int, grace_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.request = request
        self.budget = budget
        self.min_rate = min_rate
        self.grace_s = grace_s
        self._clock = clock
        self.started = clock()

    def account(self) -> None:
        got = self.request.content.total_bytes
        if got > self.budget:
            raise web.HTTPRequestEntityTooLarge(max_size=self.budget, actual_size=got)
        elapsed = self._clock() - self.started
        if elapsed > self.grace_s and got < self.min_rate * elapsed:
            raise SlowBody(got, elapsed)

    async def chunk(self, part: BodyPartReader) -> bytes:
        chunk = await asyncio.wait_for(part.read_chunk(CHUNK), READ_IDLE_S)
        self.account()
        return chunk


class SlowBody(Exception):
    def __init__(self, got: int, elapsed: float) -> None:
        super().__init__(f"{got} bytes in {elapsed:.0f} s")


async def _discard(part: BodyPartReader, body: Body) -> int:
    """Read the rest of ``part`` without keeping it (the body's limits still apply)."""
    total = 0
    while True:
        chunk = await body.chunk(part)
        if not chunk:
            return total
        total += len(chunk)


def _write_all(fd: int, data: bytes) -> None:
    # The inbox is tmpfs: a write is a memory copy and never waits on a disk, so it is
    # done here on the event loop.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass(frozen=True)
class UploadReply:
    """One file part's answer: its entry on the page and the HTTP status it earned."""

    upload: uploads.Upload
    http_status: int


async def _receive(st: WebState, part: BodyPartReader, original: str,
                   body: Body) -> UploadReply:
    s = st.settings
    tracker = st.tracker

    def refuse(code: int, reason: str) -> UploadReply:
        logger.warning("web: upload %s refused: %s",
                       shown(repr(original), hide=s.hide_filenames), reason)
        return UploadReply(tracker.refused(original, reason), code)

    try:
        fd, part_path = st.inbox.new_part()
    except OSError as exc:
        await _discard(part, body)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return refuse(507, "the inbox (in RAM) is full right now; try again when the "
                               "waiting photos are done")
        return refuse(500, f"cannot write to the inbox: {exc.strerror}")
    placed = False
    try:
        size = 0
        full = False
        with os.fdopen(fd, "w+b", buffering=0) as fh:
            try:
                while True:
                    chunk = await body.chunk(part)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > s.max_upload_bytes:
                        break
                    _write_all(fh.fileno(), chunk)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                full = True
            if full:
                os.ftruncate(fh.fileno(), 0)  # give the RAM back before draining the rest
                await _discard(part, body)
                return refuse(507, "the inbox (in RAM) is full right now; try again when "
                                   "the waiting photos are done")
            if size > s.max_upload_bytes:
                os.ftruncate(fh.fileno(), 0)
                size += await _discard(part, body)
                return refuse(413, too_large_reason(size, s.max_upload_bytes))
            try:
                fmt, _, _ = uploads.check_image(fh, max_pixels=s.max_pixels)
            except InputError as exc:
                return refuse(415, str(exc))
        # Closed before the rename: the daemon defers a file someone still has open for
        # writing, and a closed one is taken at once.
        placed_at = st.inbox.place(part_path, uploads.safe_name(original, fmt), fmt)
        placed = True
        logger.info("web: upload %s queued as %s (%d kB)",
                    shown(repr(original), hide=s.hide_filenames),
                    shown(placed_at.name, hide=s.hide_filenames), size // 1024)
        return UploadReply(tracker.queued(original, placed_at), 200)
    finally:
        if not placed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part_path)


async def api_upload(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    s = st.settings
    if request.content_type != "multipart/form-data":
        return _error(415, "send the photos as multipart/form-data")
    budget = s.max_files * (s.max_upload_bytes + PART_OVERHEAD)
    if request.content_length is not None and request.content_length > budget:
        return _error(413, f"this upload is too large: at most {s.max_files} photos of "
                           f"{s.max_upload_bytes // MB} MB each")
    st.tracker.refresh(status.read_state(s.runtime))
    outcomes: list[UploadReply] = []
    body = Body(request, budget, min_rate=s.min_upload_rate, grace_s=s.upload_grace_s)
    try:
        reader = await request.multipart()
        files = 0
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                return _error(400, "nested multipart bodies are not supported")
            if part.filename is None:
                await _discard(part, body)  # ordinary form fields: ignored
                continue
            files += 1
            original = _display_name(part.filename)
            encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "binary").lower()
            reason = None
            code = 0
            if files > s.max_files:
                code, reason = 413, f"too many photos in one upload: at most {s.max_files}"
            elif st.tracker.waiting() + st.receiving >= s.max_files:
                code, reason = 429, (f"{st.tracker.waiting() + st.receiving} photos from this "
                                     "page are still being uploaded or waiting to be "
                                     "redacted; try again when some are done")
            elif encoding not in ("binary", "8bit", "7bit") or part.headers.get(
                    hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
                code, reason = 415, "encoded file parts are not supported"
            if reason is not None:
                await _discard(part, body)
                logger.warning("web: upload refused: %s", reason)
                outcomes.append(UploadReply(st.tracker.refused(original, reason), code))
                continue
            st.receiving += 1  # counted before the first await: parallel uploads see it
            try:
                outcomes.append(await _receive(st, part, original, body))
            finally:
                st.receiving -= 1
    except ValueError as exc:  # aiohttp's multipart reader on a malformed body
        return _error(400, f"malformed upload: {exc}")
    except HttpProcessingError:
        # A part's header line over aiohttp's limit (8 KB) and the like. Its text quotes
        # the line, file name and all: never logged or echoed (web.hide_filenames).
        logger.warning("web: upload refused: malformed multipart headers")
        return _error(400, "malformed upload: a part's headers are too long or broken")
    except TimeoutError:
        return _error(408, f"the upload stalled for {READ_IDLE_S:.0f} s")
    except SlowBody as exc:
        logger.warning("web: upload cut off: too slow (%s)", exc)
        return _error(408, f"the upload was too slow (under {s.min_upload_rate // 1024} kB/s)")
    if not outcomes:
        return _error(400, "no photos in the upload")
    accepted = [o for o in outcomes if o.http_status == 200]
    code = 200 if accepted else outcomes[0].http_status
    return _json({"results": [o.upload.as_dict() for o in outcomes]}, code)
