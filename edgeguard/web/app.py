"""The web page's aiohttp application: sign-in, uploads, progress, results and status.

Why aiohttp: one well-kept package (with small C-accelerated helpers that have wheels for
aarch64 and armv7, and pure-Python fallbacks) carries the HTTP server, routing, cookies and
a streaming multipart reader, with no separate ASGI/WSGI server; it idles at about 30 MB on
a Pi with the codec loaded. Its ``MultipartReader`` hands over a file part chunk by chunk,
so an upload goes from the socket straight into the inbox on tmpfs. ``Request.post()`` is
never called: it spools file fields to ``tempfile`` (on disk under /tmp), which would put
raw pixels on persistent storage; forms here are read with :func:`_read_form`, and
``client_max_size`` is kept tiny so that even a later ``post()`` could not spool a photo.
(WSGI stacks such as Flask with waitress spool large bodies to temporary files too.)

Every request passes :func:`_guard`: the Host header (against DNS rebinding while the page
is for this machine only), the session, and for anything that changes state a same-origin
check and the session's CSRF token. The session cookie is HttpOnly and SameSite=Strict.
Nothing is ever served from the inbox or failed/: the routes below are the static files
in this package and images below the outbox (:mod:`edgeguard.web.results`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import html
import ipaddress
import logging
import os
import secrets
import string
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from edgeguard import __version__
from edgeguard.errors import InputError, StartupError
from edgeguard.lognames import shown
from edgeguard.web import results, status, uploads
from edgeguard.web.auth import DeviceCookies, PasswordFile, RateLimiter, Session, Sessions

logger = logging.getLogger(__name__)

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
    tracker: uploads.Tracker
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


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    # Not no-referrer: Chromium then sends "Origin: null" with same-origin form posts,
    # which the origin check must refuse. Nothing here links to another site anyway.
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if not request.path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-store")


# -- the guard ----------------------------------------------------------------------------


def host_allowed(host: str | None, allow_lan: bool) -> bool:
    """While the page is for this machine only, the Host header must name this machine.

    A page on another site that re-points its own name at 127.0.0.1 (DNS rebinding) then
    gets nothing: its requests carry its own name.
    """
    if allow_lan:
        return True
    if not host:
        return False
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site(request: web.Request) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return "cross-site request refused (Origin does not match)"
    return None


def _session(request: web.Request, st: WebState) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        fingerprint = st.passwords.fingerprint()
    except StartupError:
        return None  # the password file went away: nobody is signed in
    return st.sessions.get(token, fingerprint)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@web.middleware
async def _proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With web.trusted_proxy: a request from a proxy on this machine carries the browser's
    scheme, host and address in X-Forwarded-* headers; use them (the session cookie then
    gets Secure, and the https Origin matches). From any other peer they are ignored."""
    st = _state(request)
    if not st.settings.trusted_proxy or not _loopback(request.remote):
        return await handler(request)
    changes: dict[str, str] = {}
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if proto in ("http", "https"):
        changes["scheme"] = proto
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if host and all(c.isalnum() or c in "-.:[]" for c in host):
        changes["host"] = host
    forwarded_for = request.headers.get("X-Forwarded-For", "")
    if forwarded_for:
        # The proxy appends the address it saw last: the one entry it vouches for.
        changes["remote"] = forwarded_for.split(",")[-1].strip()[:64]
    return await handler(request.clone(**changes) if changes else request)  # type: ignore[arg-type]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    st = _state(request)
    if not host_allowed(request.headers.get(hdrs.HOST), st.settings.allow_lan):
        return web.Response(status=421, text="this page answers to localhost only "
                                             "(web.allow_lan is off)\n")
    session = _session(request, st)
    path = request.path
    public = path == "/login" or path.startswith("/static/")
    if session is None and not public:
        if request.method in SAFE_METHODS and not path.startswith(("/api/", "/results/")):
            raise web.HTTPSeeOther("/login")
        return _error(401, "sign in first")
    if request.method not in SAFE_METHODS:
        why = cross_site(request)
        if why is not None:
            logger.warning("web: %s %s refused: %s", request.method, path, why)
            return _error(403, why)
        if path not in FORM_ROUTES:
            sent = request.headers.get(CSRF_HEADER, "")
            if session is None or not sent or not hmac.compare_digest(
                    sent.encode(), session.csrf.encode()):
                logger.warning("web: %s %s refused: missing or wrong CSRF token",
                               request.method, path)
                return _error(403, "missing or wrong CSRF token: reload the page")
    return await handler(request)


# -- forms --------------------------------------------------------------------------------


class FormError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


async def _read_form(request: web.Request) -> dict[str, str]:
    """A small urlencoded form, read without ``Request.post()`` (see the module notes)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise FormError(415, "send the form as application/x-www-form-urlencoded")
    if request.content_length is not None and request.content_length > FORM_MAX_BYTES:
        raise FormError(413, "form too large")
    body = bytearray()
    while True:
        chunk = await request.content.read(FORM_MAX_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise FormError(413, "form too large")
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                       max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "malformed form") from None
    return {k: v for k, v in reversed(pairs)}  # the first of repeated keys wins


def _token_ok(sent: str | None, expected: str | None) -> bool:
    return bool(sent and expected) and hmac.compare_digest(
        (sent or "").encode(), (expected or "").encode())


# -- sign-in ------------------------------------------------------------------------------


def _login_page(request: web.Request, message: str = "", status_code: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    st = _state(request)
    token = secrets.token_urlsafe(24)
    resp = _render(st, "login", status_code, csrf=token, message=message,
                   message_class="message" if message else "message hidden")
    if headers:
        resp.headers.update(headers)
    resp.set_cookie(LOGIN_COOKIE, token, path="/login", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=3600)
    return resp


def _signed_in(request: web.Request) -> Session:
    """The session _guard found (it let the request through, so there is one)."""
    session = _session(request, _state(request))
    if session is None:  # signed out between the guard and here
        raise web.HTTPUnauthorized(text="sign in first\n")
    return session


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={hdrs.LOCATION: location})


async def login_form(request: web.Request) -> web.StreamResponse:
    if _session(request, _state(request)) is not None:
        raise web.HTTPSeeOther("/")
    return _login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    try:
        form = await _read_form(request)
    except FormError as exc:
        return _login_page(request, str(exc), exc.status_code)
    if not _token_ok(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
        logger.warning("web: sign-in refused: missing or wrong CSRF token")
        return _login_page(request, "The sign-in form had expired; please try again.", 403)
    client = request.remote or "unknown"
    # A browser that signed in before is counted on its own (its device cookie), so guesses
    # by others behind the same address (an ssh tunnel, a proxy) do not keep it out.
    key = st.devices.client(request.cookies.get(DEVICE_COOKIE)) or client
    # Counted before the hash is checked, in one step: parallel guesses cannot slip past.
    wait = st.limiter.acquire(key)
    if wait > 0:
        seconds = int(wait) + 1
        return _login_page(request, f"Too many failed sign-ins. Try again in {seconds} s.",
                           429, headers={"Retry-After": str(seconds)})
    secret = form.get("password", "")
    loop = asyncio.get_running_loop()
    try:
        async with st.verify_lock:  # one scrypt at a time: bounded memory and CPU
            ok, fingerprint = await loop.run_in_executor(None, st.passwords.verify, secret)
    except StartupError as exc:
        logger.error("web: %s", exc)
        return _login_page(request, "No password is set. On the appliance, run: sudo "
                           "edgeguard web --set-password", 503)
    if not ok:
        logger.warning("web: failed sign-in from %s", client)
        return _login_page(request, "Wrong password or token.", 401)
    st.limiter.success(key)
    token, _ = st.sessions.create(fingerprint)
    logger.info("web: signed in from %s", client)
    resp = _see_other("/")
    resp.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=int(st.settings.session_s))
    resp.del_cookie(LOGIN_COOKIE, path="/login")
    resp.set_cookie(DEVICE_COOKIE, st.devices.issue(), path="/login", httponly=True,
                    samesite="Strict", secure=request.secure, max_age=DEVICE_COOKIE_S)
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    st = _state(request)
    session = _signed_in(request)
    try:
        form = await _read_form(request)
    except FormError as exc:
        return _error(exc.status_code, str(exc))
    if not _token_ok(form.get("csrf"), session.csrf):
        return _error(403, "missing or wrong CSRF token: reload the page")
    st.sessions.remove(request.cookies.get(SESSION_COOKIE))
    resp = _see_other("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


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
                 "where": "refused by the page" if u.status is uploads.Status.REFUSED
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
class Outcome:
    upload: uploads.Upload
    http_status: int


async def _receive(st: WebState, part: BodyPartReader, original: str,
                   body: Body) -> Outcome:
    s = st.settings
    tracker = st.tracker

    def refuse(code: int, reason: str) -> Outcome:
        logger.warning("web: upload %s refused: %s",
                       shown(repr(original), hide=s.hide_filenames), reason)
        return Outcome(tracker.refused(original, reason), code)

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
        return Outcome(tracker.queued(original, placed_at), 200)
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
    outcomes: list[Outcome] = []
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
                outcomes.append(Outcome(st.tracker.refused(original, reason), code))
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
        tracker=uploads.Tracker(settings.inbox, settings.outbox, clock=clock, wall=wall),
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
