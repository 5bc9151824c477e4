"""Run the web page: resolve the daemon's folders, check them, serve until SIGTERM.

The web process reads the daemon's config file for the folders, output format and pixel
limit, so that what it accepts and what it expects in the outbox match what the daemon
does. It needs the inbox (write, on tmpfs), the outbox (read) and the runtime folder's
state file (read); never failed/.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from edgeguard import mounts, service, startup
from edgeguard.config import Config
from edgeguard.errors import ConfigError, StartupError
from edgeguard.web.app import create_app
from edgeguard.web.auth import PasswordFile
from edgeguard.web.context import Settings
from edgeguard.web.uploads import Inbox

logger = logging.getLogger(__name__)

MB = 1024 * 1024
SHUTDOWN_S = 5.0


def check_listen(cfg: Config) -> str:
    """The address to listen on; ConfigError unless it is loopback or LAN is allowed."""
    w = cfg.web
    try:
        addr = ipaddress.ip_address(w.listen)
    except ValueError:
        raise ConfigError(f"{cfg.source}: web.listen: {w.listen!r} is not an IP address "
                          "(127.0.0.1 for this machine, 0.0.0.0 for all)") from None
    if not addr.is_loopback and not w.allow_lan:
        raise ConfigError(f"{cfg.source}: web.listen = {w.listen!r} is not a loopback address; "
                          "set web.allow_lan = true to serve other machines")
    return str(addr)


def _base(is_tmpfs: Callable[[Path], bool] = mounts.is_tmpfs) -> Path:
    """The daemon's default base for this user if its inbox is there, else the service's.

    The service's web user cannot write /run/edgeguard itself, only its inbox, so the
    daemon's own rule alone would send it to /dev/shm.
    """
    base = startup.default_base(is_tmpfs)
    if not (base / "inbox").is_dir() and (startup.RUN_BASE / "inbox").is_dir():
        return startup.RUN_BASE
    return base


def resolve_paths(cfg: Config) -> startup.Paths:
    return startup.resolve_paths(cfg, base=_base)


def check_inbox(inbox: Path, *, is_tmpfs: Callable[[Path], bool] = mounts.is_tmpfs) -> None:
    if not inbox.is_dir():
        raise StartupError(f"the inbox {inbox} does not exist: start the daemon first "
                           "(systemctl start edgeguard, or edgeguard run)")
    if not is_tmpfs(inbox):
        raise StartupError(f"the inbox {inbox} is not on tmpfs: uploads are raw images and "
                           "must never touch persistent storage")
    if not os.access(inbox, os.W_OK | os.X_OK):
        raise StartupError(f"the inbox {inbox} is not writable by this user (the web "
                           "service's user must be in the edgeguard-drop group)")


def settings_for(cfg: Config) -> tuple[Settings, str, int]:
    """(app settings, host, port) after the start-up checks."""
    host = check_listen(cfg)
    paths = resolve_paths(cfg)
    check_inbox(paths.inbox)
    password_file = Path(cfg.web.password_file)
    PasswordFile(password_file).fingerprint()  # StartupError when none is set
    if not paths.outbox.is_dir():
        logger.warning("the outbox %s does not exist yet; results appear once the daemon "
                       "has made it", paths.outbox)
    w = cfg.web
    try:
        free = os.statvfs(paths.inbox)
        room = free.f_blocks * free.f_frsize
        if room < w.max_upload_mb * MB:
            logger.warning("the inbox's tmpfs (%d MB) is smaller than web.max_upload_mb "
                           "(%d MB)", room // MB, w.max_upload_mb)
    except OSError:
        pass
    settings = Settings(
        inbox=paths.inbox, outbox=paths.outbox, runtime=paths.runtime,
        password_file=password_file, output_format=cfg.output.format,
        max_pixels=cfg.input.max_pixels, max_upload_bytes=w.max_upload_mb * MB,
        max_files=w.max_files, session_s=w.session_hours * 3600.0,
        login_failures=w.login_failures, login_window_s=w.login_window_s,
        trusted_proxy=w.trusted_proxy,
        allow_lan=w.allow_lan, hide_filenames=cfg.daemon.hide_filenames)
    return settings, host, w.port


def serve(cfg: Config, *, notify: service.Notify = service.notify) -> int:
    settings, host, port = settings_for(cfg)
    swept = Inbox(settings.inbox, settings.outbox, settings.output_format).sweep_parts()
    if swept:
        logger.warning("removed %d unfinished upload(s) left in the inbox", swept)
    app = create_app(settings)
    logger.info("uploads go to %s; results are read from %s", settings.inbox, settings.outbox)
    return asyncio.run(_serve(app, host, port, notify))


async def _serve(app: web.Application, host: str, port: int, notify: service.Notify) -> int:
    # No access log: the page polls every second or two, and URLs name files.
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    shown = f"[{host}]" if ":" in host else host
    logger.info("web page on http://%s:%d/", shown, port)
    notify(f"READY=1\nSTATUS=serving http://{shown}:{port}/")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("stopping the web page")
    notify("STOPPING=1")
    await runner.cleanup()
    return 0
