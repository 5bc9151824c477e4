"""systemd integration: logging to the journal or stderr, sd_notify, watchdog.

Everything here is a no-op outside systemd: ``notify`` returns False when $NOTIFY_SOCKET
is unset and ``watchdog_period`` returns None when $WATCHDOG_USEC is.

sd_notify goes through python-systemd (``systemd.daemon.notify``) when it is importable,
else through the few lines it needs: one datagram to the AF_UNIX socket named by
$NOTIFY_SOCKET, where a leading ``@`` names a socket in the abstract namespace.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import ClassVar

logger = logging.getLogger(__name__)

Notify = Callable[[str], bool]


def configure_logging(level: int = logging.INFO) -> None:
    """Log to the journal when systemd connected our stderr to it, else to stderr.

    Under systemd ($JOURNAL_STREAM set and naming our stderr) plain stderr lines already
    reach the journal; a ``<N>`` prefix gives each line its syslog priority and the
    journal adds its own timestamp.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(_JournalPrefixFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


def stderr_is_journal(environ: Mapping[str, str] | None = None,
                      fstat: Callable[[int], os.stat_result] = os.fstat) -> bool:
    """True when $JOURNAL_STREAM names the file behind fd 2 (systemd.exec(5)).

    Checking the device and inode, as systemd documents, keeps a child whose stderr was
    redirected (a pipe in a test, a file) from writing ``<6>`` prefixes into it.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = fstat(2)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class _JournalPrefixFormatter(logging.Formatter):
    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self._PRIORITY.get(record.levelno, 6)
        # A traceback spans lines; the journal splits them, so prefix only the first.
        return f"<{prio}>{super().format(record)}"


# -- sd_notify -------------------------------------------------------------------------


def notify_datagram(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` to $NOTIFY_SOCKET as one datagram; False when there is none.

    This is sd_notify(3) without libsystemd: ``@name`` is an abstract socket (a leading
    NUL byte), anything else a path. Errors are logged once per call and reported as
    False: a lost notification must never stop the daemon.
    """
    addr = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr[0] == "@":
        target: str | bytes = b"\0" + addr[1:].encode()
    elif addr[0] == "/":
        target = addr
    else:  # vsock addresses (vsock:CID:PORT) are for VMs; not ours
        logger.debug("NOTIFY_SOCKET %r is not an AF_UNIX address; ignored", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError as exc:
        logger.warning("sd_notify to %s failed: %s", addr, exc)
        return False
    return True


def _python_systemd_notify() -> Notify | None:
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    fn = getattr(daemon, "notify", None)
    if fn is None:
        return None

    def send(message: str) -> bool:
        return bool(fn(message))

    return send


_notify_impl: Notify | None = None


def notify(message: str) -> bool:
    """sd_notify(message): python-systemd when importable, else :func:`notify_datagram`."""
    global _notify_impl
    if _notify_impl is None:
        _notify_impl = _python_systemd_notify() or notify_datagram
    return _notify_impl(message)


def watchdog_period(environ: Mapping[str, str] | None = None,
                    pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds when systemd expects pings from this process.

    $WATCHDOG_USEC is the timeout; $WATCHDOG_PID, when set, must be our pid (else the
    variables were inherited by a child and are not ours). Ping at half this period or
    more often (sd_watchdog_enabled(3)).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not a number; watchdog pings disabled", usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000
