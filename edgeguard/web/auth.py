"""Sign-in for the web page: the hashed password file, failed-attempt limits, sessions.

The password (or a generated token: to the page they are the same thing) is stored as one
line, ``scrypt$N$r$p$<salt>$<key>`` (base64), written by ``edgeguard web --set-password``.
scrypt is in the standard library (OpenSSL), memory-hard, and with N=2**14, r=8 it needs
16 MB and about 40 ms on a Pi 4 per attempt; the web process runs one at a time. Keys are
compared with :func:`hmac.compare_digest`.

The file is read again whenever it changes, so a new password takes effect without a
restart, and sessions opened under the old one end (each remembers the file's fingerprint).
Sessions live in memory only: a restart of the web process signs everybody out.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import grp
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeguard.errors import ConfigError, StartupError
from edgeguard.sinks.fileops import replace_file

logger = logging.getLogger(__name__)

SCHEME = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
KEY_BYTES = 32
SALT_BYTES = 16
# A password file asking for more memory per attempt than this is refused.
MAX_SCRYPT_MEMORY = 64 * 2**20
MIN_SECRET_CHARS = 8
MAX_SECRET_CHARS = 1024  # longer input is refused before hashing (cost is per byte)
# The group the web service runs in; --set-password gives it read access to the file.
WEB_GROUP = "edgeguard-web"
PASSWORD_FILE_MODE = 0o640


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * n * r, dklen=KEY_BYTES)


def hash_secret(secret: str, *, salt: bytes | None = None, n: int = SCRYPT_N,
                r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The stored form of ``secret``: ``scrypt$N$r$p$salt$key``, salt random by default."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = _scrypt(secret, salt, n, r, p)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


@dataclass(frozen=True)
class StoredSecret:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, line: str) -> StoredSecret:
        """Raises ValueError for anything but a well-formed scrypt line."""
        parts = line.strip().split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError("not a scrypt password line")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt = base64.b64decode(parts[4], validate=True)
            key = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise ValueError(f"malformed password line ({exc})") from None
        # Bounds keep a tampered file from costing gigabytes per sign-in attempt.
        if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
                and 128 * n * r <= MAX_SCRYPT_MEMORY):
            raise ValueError("scrypt parameters out of range")
        if len(salt) < 8 or len(key) < 16:
            raise ValueError("salt or key too short")
        return cls(n, r, p, salt, key)

    def matches(self, secret: str) -> bool:
        candidate = _scrypt(secret, self.salt, self.n, self.r, self.p)[: len(self.key)]
        return hmac.compare_digest(candidate, self.key)


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the stored line (constant-time comparison of the keys)."""
    if len(secret) > MAX_SECRET_CHARS:
        return False
    return StoredSecret.parse(stored).matches(secret)


def check_new_secret(secret: str) -> None:
    """Raise ConfigError with the reason a new password is not acceptable."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"the password must have at least {MIN_SECRET_CHARS} characters")
    if len(secret) > MAX_SECRET_CHARS:
        raise ConfigError(f"the password must have at most {MAX_SECRET_CHARS} characters")
    if secret != secret.strip() or any(ord(c) < 32 for c in secret):
        raise ConfigError("the password must not start or end with spaces or hold control "
                          "characters")


def new_token() -> str:
    """A random sign-in token (32 characters, 192 bits)."""
    return secrets.token_urlsafe(24)


class PasswordFile:
    """The hashed secret on disk, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._key: tuple[int, int, int] | None = None
        self._stored: StoredSecret | None = None
        self._fingerprint = ""

    def _load(self) -> tuple[StoredSecret, str]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StartupError(f"no web password is set ({self.path} does not exist): run "
                               "`edgeguard web --set-password`") from None
        except OSError as exc:
            raise StartupError(f"cannot read the web password file {self.path}: "
                               f"{exc.strerror}") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if key == self._key and self._stored is not None:
                return self._stored, self._fingerprint
        try:
            text = self.path.read_text(encoding="ascii")
            stored = StoredSecret.parse(text)
        except (OSError, UnicodeError, ValueError) as exc:
            raise StartupError(f"the web password file {self.path} is unusable ({exc}): run "
                               "`edgeguard web --set-password` again") from None
        fingerprint = hashlib.sha256(text.strip().encode()).hexdigest()
        with self._lock:
            self._key, self._stored, self._fingerprint = key, stored, fingerprint
        return stored, fingerprint

    def fingerprint(self) -> str:
        """Changes whenever the password does (raises StartupError when there is none)."""
        return self._load()[1]

    def verify(self, secret: str) -> tuple[bool, str]:
        """(matches, fingerprint of the file it was checked against)."""
        stored, fingerprint = self._load()
        if len(secret) > MAX_SECRET_CHARS:
            return False, fingerprint
        return stored.matches(secret), fingerprint

    def set(self, secret: str) -> None:
        """Store the hash of ``secret`` (atomically), readable by the web service's group."""
        check_new_secret(secret)
        line = hash_secret(secret) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, line.encode("ascii"), mode=PASSWORD_FILE_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror} (run as root for "
                              "the service, or set web.password_file)") from None
        if os.geteuid() == 0:
            with contextlib.suppress(KeyError):
                os.chown(self.path, 0, grp.getgrnam(WEB_GROUP).gr_gid)


# -- failed attempts ------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` sign-in attempts checked per client within ``window_s``.

    An attempt is counted by :meth:`acquire` *before* its password is hashed, in the same
    step as the check (the event loop runs it without a pause), so parallel attempts cannot
    all slip in before the first is counted: 30 at once get ``limit`` hash checks and 29 -
    ``limit`` refusals. A success clears the client's record; a failure keeps its count.
    The window slides: one more attempt is allowed each time the oldest counted one is
    ``window_s`` old, so guesses are slowed to ``limit`` per window, not shut out for good.
    Records of idle clients are dropped, and at most ``max_clients`` are kept (the oldest
    go first), so the table cannot grow without bound.
    """

    def __init__(self, limit: int, window_s: float, *, max_clients: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._attempts: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict())

    def _recent(self, client: str, now: float) -> collections.deque[float] | None:
        times = self._attempts.get(client)
        if times is None:
            return None
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if not times:
            del self._attempts[client]
            return None
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self._clock()
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def acquire(self, client: str) -> float:
        """Count an attempt now, if one is allowed: 0.0; else the seconds to wait (nothing
        is counted then). Check and count are one step: call it from one thread only."""
        wait = self.retry_after(client)
        if wait > 0:
            return wait
        now = self._clock()
        times = self._recent(client, now)
        if times is None:
            times = collections.deque(maxlen=self.limit)
            self._attempts[client] = times
        times.append(now)
        self._attempts.move_to_end(client)
        while len(self._attempts) > self.max_clients:
            self._attempts.popitem(last=False)
        return 0.0

    def failure(self, client: str) -> None:
        """A failed attempt that was not counted by :meth:`acquire` (kept for callers
        that check first and count afterwards)."""
        self.acquire(client)

    def success(self, client: str) -> None:
        self._attempts.pop(client, None)


class DeviceCookies:
    """A browser that has signed in before gets a device cookie; its attempts are counted
    on their own, not with everyone else behind the same address.

    Behind an ssh tunnel or a proxy every user shares one address, so anyone who reaches the
    page could otherwise use up that address's attempts and keep the owner out. The cookie
    is ``<nonce>.<HMAC(key, nonce)>``; the key is derived from the stored password line, so
    nobody without the password file can make one, and a new password voids them all. (The
    OWASP "device cookie" scheme.)
    """

    def __init__(self, passwords: PasswordFile) -> None:
        self._passwords = passwords

    def _key(self) -> bytes:
        return hashlib.sha256(b"edgeguard device cookie\0"
                              + self._passwords.fingerprint().encode()).digest()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key(), nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def client(self, cookie: str | None) -> str | None:
        """The rate-limit key for a valid device cookie, else None."""
        if not cookie or len(cookie) > 128 or "." not in cookie:
            return None
        nonce, _, mac = cookie.partition(".")
        try:
            good = hmac.compare_digest(mac.encode(), self._sign(nonce).encode())
        except StartupError:
            return None
        return f"device:{nonce}" if good else None


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    csrf: str
    created: float
    fingerprint: str  # the password file's, at sign-in


def _digest(token: str) -> str:
    # The table is keyed by a hash of the cookie, so neither a memory dump nor the timing
    # of a dict lookup gives a usable cookie away.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """Signed-in browsers: a random cookie token -> its CSRF token, for ``lifetime_s``."""

    def __init__(self, lifetime_s: float, *, max_sessions: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._table: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def create(self, fingerprint: str) -> tuple[str, Session]:
        self._expire()
        token = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=self._clock(),
                          fingerprint=fingerprint)
        self._table[_digest(token)] = session
        while len(self._table) > self.max_sessions:
            self._table.popitem(last=False)  # the oldest sign-in goes
        return token, session

    def get(self, token: str | None, fingerprint: str) -> Session | None:
        if not token or len(token) > 256:
            return None
        key = _digest(token)
        session = self._table.get(key)
        if session is None:
            return None
        if (self._clock() - session.created >= self.lifetime_s
                or not hmac.compare_digest(session.fingerprint, fingerprint)):
            del self._table[key]
            return None
        return session

    def remove(self, token: str | None) -> None:
        if token:
            self._table.pop(_digest(token), None)

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._table.items() if now - s.created >= self.lifetime_s]:
            del self._table[key]

    def __len__(self) -> int:
        return len(self._table)
