"""Request guards: security headers, the Host check, the trusted proxy, session and CSRF.

Every request passes :func:`_guard`: the Host header (against DNS rebinding while the page
is for this machine only), the session, and for anything that changes state a same-origin
check and the session's CSRF token. The session cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from edgeguard.errors import StartupError
from edgeguard.web.auth import Session
from edgeguard.web.context import (
    CSP,
    CSRF_HEADER,
    FORM_ROUTES,
    LOOPBACK_NAMES,
    SAFE_METHODS,
    SESSION_COOKIE,
    WebState,
    _error,
    _state,
)

logger = logging.getLogger(__name__)


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
