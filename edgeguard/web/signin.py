"""Sign-in and sign-out: the small urlencoded forms, the attempt limits and the cookies."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import urllib.parse

from aiohttp import hdrs, web

from edgeguard.errors import StartupError
from edgeguard.web.auth import Session
from edgeguard.web.context import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_S,
    FORM_MAX_BYTES,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    _error,
    _render,
    _state,
)
from edgeguard.web.guards import _session

logger = logging.getLogger(__name__)


# -- forms --------------------------------------------------------------------------------


class FormError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


async def _read_form(request: web.Request) -> dict[str, str]:
    """A small urlencoded form, read without ``Request.post()`` (see :mod:`.app`'s notes)."""
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
