"""`edgeguard run`: the foreground daemon systemd runs as is."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
from pathlib import Path
from types import FrameType

from edgeguard import config, service, startup
from edgeguard.cli import command
from edgeguard.config import Config
from edgeguard.daemon import Daemon

logger = logging.getLogger(__name__)


def add_daemon_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    p.add_argument("--inbox", help="watched folder on tmpfs (overrides daemon.inbox)")
    p.add_argument("--outbox", help="folder for redacted images (overrides daemon.outbox)")
    p.add_argument("--failed", help="folder for failed inputs, on the inbox's tmpfs "
                                    "(overrides daemon.failed)")


def load_config(args: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command line's folder overrides applied."""
    cfg = config.load(args.config)
    return config.override(cfg, "daemon", inbox=args.inbox, outbox=args.outbox,
                           failed=args.failed)


def _add(p: argparse.ArgumentParser) -> None:
    add_daemon_args(p)
    p.add_argument("--camera", metavar="SOURCE",
                   help="camera source (overrides camera.source); none: the inbox alone")


def _run_config(args: argparse.Namespace) -> Config:
    cfg = config.override(load_config(args), "camera", source=args.camera)
    return startup.fit_to_memory(cfg)  # at start and on every reload


@command("run", "run the daemon: watch the inbox, write redacted images to the outbox")(_add)
def _run(args: argparse.Namespace) -> int:
    # When the watchdog kills a hung daemon (SIGABRT), every thread's stack goes to stderr,
    # which is the journal: with core dumps off that is the only trace of where it hung.
    faulthandler.enable()
    cfg = _run_config(args)
    paths = startup.resolve_paths(cfg)
    startup.require(cfg, paths)
    from edgeguard.pipeline import Pipeline

    pipeline = Pipeline(cfg, at_start_up=True)
    camera = None
    if cfg.camera.source != "none":
        from edgeguard.camera.loop import CameraService

        camera = CameraService(cfg, pipeline, paths.outbox)
    reload = (lambda: _run_config(args)) if args.config is not None else None
    daemon = Daemon(cfg, paths, pipeline, load_config=reload,
                    watchdog_s=service.watchdog_period(), camera=camera)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        daemon.stop()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        daemon.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    if camera is not None:
        # `edgeguard snap`; snap() only bumps a counter, safe in a signal handler.
        signal.signal(signal.SIGUSR1, lambda signum, frame: camera.snap())
    code = daemon.run()
    if not daemon.clean_exit:
        # A worker is wedged inside native code; interpreter shutdown could wait on it.
        logging.shutdown()
        os._exit(code)
    return code
