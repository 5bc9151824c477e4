"""`edgeguard check`: the daemon's start-up checks, each reported (systemd's ExecStartPre)."""

from __future__ import annotations

import argparse

from edgeguard import startup
from edgeguard.cli import command
from edgeguard.commands.run import add_daemon_args, load_config
from edgeguard.errors import ConfigError


@command("check", "run the daemon's start-up checks and report each")(add_daemon_args)
def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args)
    except ConfigError as exc:
        print(f"FAIL config: {exc}")
        return 1
    print(f"ok   config: {cfg.source} is valid")
    paths = startup.resolve_paths(cfg)
    results = startup.run_checks(cfg, paths, stop_at_first=False)
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}")
    return 0 if all(r.ok for r in results) else 1
