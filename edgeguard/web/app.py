"""The web page's aiohttp application: sign-in, uploads, progress, results and status.

Why aiohttp: one well-kept package (with small C-accelerated helpers that have wheels for
aarch64 and armv7, and pure-Python fallbacks) carries the HTTP server, routing, cookies and
a streaming multipart reader, with no separate ASGI/WSGI server; it idles at about 30 MB on
a Pi with the codec loaded. Its ``MultipartReader`` hands over a file part chunk by chunk,
so an upload goes from the socket straight into the inbox on tmpfs. ``Request.post()`` is
never called: it spools file fields to ``tempfile`` (on disk under /tmp), which would put
raw pixels on persistent storage; forms here are read with :func:`.signin._read_form`, and
``client_max_size`` is kept tiny so that even a later ``post()`` could not spool a photo.
(WSGI stacks such as Flask with waitress spool large bodies to temporary files too.)

Every request passes the guards in :mod:`.guards` (Host header, session, same-origin check
and CSRF token); sign-in is :mod:`.signin`, the page and its data :mod:`.pages`, uploads
:mod:`.streaming`, and what they share :mod:`.context`. Nothing is ever served from the
inbox or failed/: the routes below are the static files in this package and images below
the outbox (:mod:`edgeguard.web.results`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from edgeguard.web import uploads
from edgeguard.web.auth import DeviceCookies, PasswordFile, RateLimiter, Sessions
from edgeguard.web.context import (
    FORM_MAX_BYTES,
    STATE,
    STATIC_DIR,
    Settings,
    WebState,
    _load_templates,
)
from edgeguard.web.guards import _guard, _proxy, _security_headers
from edgeguard.web.pages import api_results, api_status, api_uploads, index, result_file
from edgeguard.web.signin import login, login_form, logout
from edgeguard.web.streaming import api_upload

# -- the application ----------------------------------------------------------------------


def create_app(settings: Settings, *, clock: Callable[[], float] = time.monotonic,
               wall: Callable[[], float] = time.time) -> web.Application:
    # client_max_size bounds Request.read()/post(); nothing here calls post() (see above),
    # and this keeps any future call from spooling an upload to a temporary file.
    app = web.Application(middlewares=[_proxy, _guard], client_max_size=FORM_MAX_BYTES)
    passwords = PasswordFile(settings.password_file)
    app[STATE] = WebState(
        settings=settings,
        passwords=passwords,
        devices=DeviceCookies(passwords),
        limiter=RateLimiter(settings.login_failures, settings.login_window_s, clock=clock),
        sessions=Sessions(settings.session_s, clock=clock),
        inbox=uploads.Inbox(settings.inbox, settings.outbox, settings.output_format),
        tracker=uploads.UploadTracker(settings.inbox, settings.outbox, clock=clock, wall=wall),
        templates=_load_templates(),
    )
    app.on_response_prepare.append(_security_headers)
    r = app.router
    r.add_get("/", index)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/api/status", api_status)
    r.add_get("/api/uploads", api_uploads)
    r.add_get("/api/results", api_results)
    r.add_post("/api/upload", api_upload)
    r.add_get("/results/{path:.+}", result_file)
    r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
