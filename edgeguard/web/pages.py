"""The page and its data: the index, the status, uploads and results lists, result files."""

from __future__ import annotations

import asyncio
import os
import urllib.parse

from aiohttp import hdrs, web

from edgeguard.web import results, status, uploads
from edgeguard.web.context import (
    CHUNK,
    FAILURES_LISTED,
    MB,
    RESULTS_LISTED,
    _error,
    _json,
    _render,
    _state,
)
from edgeguard.web.signin import _signed_in

# -- the page and its data ----------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    s = st.settings
    session = _signed_in(request)
    return _render(st, "index", csrf=session.csrf, max_mb=s.max_upload_bytes // MB,
                   max_files=s.max_files)


async def api_status(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    s = st.settings
    snap = status.read_state(s.runtime)
    st.tracker.refresh(snap)
    failures = [{"file": u.original, "reason": u.reason, "at": u.at,
                 "where": "refused by the page" if u.status is uploads.UploadStatus.REFUSED
                 else "failed in the daemon"}
                for u in st.tracker.failures(FAILURES_LISTED) if u.reason]
    return _json({"daemon": status.panel(snap), "failures": failures,
                  "limits": {"max_upload_mb": s.max_upload_bytes // MB,
                             "max_files": s.max_files}})


async def api_uploads(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    st.tracker.refresh(status.read_state(st.settings.runtime))
    return _json({"uploads": [u.as_dict() for u in st.tracker.items()]})


async def api_results(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(None, results.list_results, st.settings.outbox,
                                       RESULTS_LISTED)
    return _json({"results": [r.as_dict() for r in found]})


def _disposition(kind: str, name: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                         for c in name)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name)}"


async def result_file(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    rel = request.match_info["path"]
    try:
        opened = results.open_result(st.settings.outbox, rel)
    except results.NotFound:
        return _error(404, "no such redacted image")
    kind = "attachment" if request.query.get("download") else "inline"
    resp = web.StreamResponse(headers={
        hdrs.CONTENT_TYPE: opened.content_type,
        hdrs.CONTENT_LENGTH: str(opened.size),
        hdrs.CONTENT_DISPOSITION: _disposition(kind, opened.name),
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })
    loop = asyncio.get_running_loop()
    with os.fdopen(opened.fd, "rb", buffering=0) as fh:
        await resp.prepare(request)
        if request.method != "HEAD":
            left = opened.size
            while left > 0:
                chunk = await loop.run_in_executor(None, fh.read, min(CHUNK, left))
                if not chunk:
                    break  # shrank meanwhile (it is never rewritten: outputs are final)
                left -= len(chunk)
                await resp.write(chunk)
    await resp.write_eof()
    return resp
