"""What every part of the web page shares: settings, per-app state, limits and responses.

The routes are in :mod:`.app`; the request guards in :mod:`.guards`, sign-in in
:mod:`.signin`, the page and its data in :mod:`.pages`, upload streaming in :mod:`.streaming`.
"""

from __future__ import annotations

import asyncio
import html
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from edgeguard import __version__
from edgeguard.web import uploads
from edgeguard.web.auth import DeviceCookies, PasswordFile, RateLimiter, Sessions

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

SESSION_COOKIE = "eg_session"
LOGIN_COOKIE = "eg_login"
DEVICE_COOKIE = "eg_device"
DEVICE_COOKIE_S = 400 * 86400  # browsers cap a cookie's life at 400 days
CSRF_HEADER = "X-CSRF-Token"
MB = 1024 * 1024
CHUNK = 256 * 1024
# An upload that sends nothing for this long is dropped (its temporary file removed).
READ_IDLE_S = 60.0
# ... and so is one that, after its first UPLOAD_GRACE_S, sends slower than this on average
# (a body trickled in a byte at a time would otherwise hold a connection and a temporary
# file for ever). 16 kB/s: a 30 MB photo may take half an hour.
MIN_UPLOAD_RATE = 16 * 1024
UPLOAD_GRACE_S = 20.0
# Sign-in and sign-out forms: a password and a token fit easily.
FORM_MAX_BYTES = 8192
# Headers and boundaries around each file in a multipart body.
PART_OVERHEAD = 64 * 1024
RESULTS_LISTED = 60
FAILURES_LISTED = 10
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that check the CSRF token from their form themselves.
FORM_ROUTES = frozenset({"/login", "/logout"})
LOOPBACK_NAMES = frozenset({"localhost"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class Settings:
    """What the web process needs, resolved from the shared config (see server.py)."""

    inbox: Path
    outbox: Path
    runtime: Path
    password_file: Path
    output_format: str
    max_pixels: int
    max_upload_bytes: int
    max_files: int
    session_s: float
    login_failures: int
    login_window_s: float
    allow_lan: bool
    hide_filenames: bool = False
    # Behind a TLS proxy on this machine: take the scheme, host and client address from its
    # X-Forwarded-Proto/-Host/-For headers (only from a loopback peer).
    trusted_proxy: bool = False
    min_upload_rate: int = MIN_UPLOAD_RATE
    upload_grace_s: float = UPLOAD_GRACE_S


@dataclass
class WebState:
    settings: Settings
    passwords: PasswordFile
    limiter: RateLimiter
    sessions: Sessions
    inbox: uploads.Inbox
    tracker: uploads.UploadTracker
    templates: dict[str, string.Template]
    devices: DeviceCookies
    verify_lock: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # Photos being received right now: they count toward max_files with the queued ones.
    receiving: int = 0


STATE = web.AppKey("edgeguard_web", WebState)


def _state(request: web.Request) -> WebState:
    return request.app[STATE]


def too_large_reason(size: int | None, limit_bytes: int) -> str:
    """The page's message for a photo over the limit (app.js words it the same way)."""
    shown = f"{size / MB:.1f} MB" if size is not None else f"more than {limit_bytes // MB} MB"
    return f"too large: {shown}; the limit is {limit_bytes // MB} MB per photo"


# -- rendering ----------------------------------------------------------------------------


def _load_templates() -> dict[str, string.Template]:
    return {p.stem: string.Template(p.read_text(encoding="utf-8"))
            for p in TEMPLATES_DIR.glob("*.html")}


def _render(st: WebState, name: str, status_code: int = 200, **values: object) -> web.Response:
    safe = {k: html.escape(str(v), quote=True) for k, v in values.items()}
    safe.setdefault("version", html.escape(__version__))
    body = st.templates[name].substitute(safe)
    return web.Response(text=body, status=status_code, content_type="text/html",
                        charset="utf-8")


def _json(data: dict[str, Any], status_code: int = 200,
          headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status_code, headers=headers)


def _error(status_code: int, message: str) -> web.Response:
    return _json({"error": message}, status_code)
