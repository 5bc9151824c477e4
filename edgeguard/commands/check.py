"""`edgeguard check`: the daemon's start-up checks, each reported (systemd's ExecStartPre).

It creates and changes nothing: a folder the daemon would make is checked where it would
be made.

Without ``--config`` it checks what the installed service runs with,
/etc/edgeguard/edgeguard.toml, when that file exists (else the built-in defaults), and
says which. ``--config-only`` stops after the config (the unit's ExecReload: a broken
config fails ``systemctl reload`` itself).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeguard import config, startup
from edgeguard.cli import command
from edgeguard.commands.run import add_daemon_args, load_config
from edgeguard.errors import ConfigError

INSTALLED_CONFIG = Path("/etc/edgeguard/edgeguard.toml")


def _add(p: argparse.ArgumentParser) -> None:
    add_daemon_args(p)
    p.set_defaults(config_default=INSTALLED_CONFIG)
    p.add_argument("--camera", metavar="SOURCE",
                   help="camera source to check (overrides camera.source), as `run` takes it")
    p.add_argument("--config-only", action="store_true",
                   help="validate the config and stop (what `systemctl reload` runs first)")


@command("check", "run the daemon's start-up checks and report each")(_add)
def _check(args: argparse.Namespace) -> int:
    if args.config is None and args.config_default.is_file():
        args.config = args.config_default
    try:
        cfg = load_config(args)
        cfg = config.override(cfg, "camera", source=args.camera)
    except ConfigError as exc:
        print(f"FAIL config: {exc}")
        return 1
    if args.config is None:
        print("ok   config: no --config and no installed "
              f"{args.config_default}: checking the built-in defaults")
    else:
        print(f"ok   config: {cfg.source} is valid")
    if args.config_only:
        return 0
    paths = startup.resolve_paths(cfg)
    results = startup.run_checks(cfg, paths, stop_at_first=False, create=False)
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.detail}")
    return 0 if all(r.ok for r in results) else 1
