"""`edgeguard web`: the optional upload page, and setting its password."""

from __future__ import annotations

import argparse
import getpass
import grp
import logging
import os
import sys
from pathlib import Path

from edgeguard import config
from edgeguard.cli import command
from edgeguard.config import Config
from edgeguard.errors import ConfigError, StartupError


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="the daemon's TOML config file (the page "
                                               "reads its folders and [web] section)")
    p.add_argument("--listen", help="address to listen on (overrides web.listen)")
    p.add_argument("--port", type=int, help="TCP port (overrides web.port)")
    once = p.add_mutually_exclusive_group()
    once.add_argument("--set-password", action="store_true",
                      help="set the sign-in password (asked twice on a terminal, else read "
                           "as one line from stdin), store its hash and exit")
    once.add_argument("--generate-token", action="store_true",
                      help="set a random sign-in token, print it once, store its hash and "
                           "exit")


def load_config(args: argparse.Namespace) -> Config:
    cfg = config.load(args.config)
    return config.override(cfg, "web", listen=args.listen, port=args.port)


def _read_secret() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != first:
            raise ConfigError("the two passwords differ; nothing changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _group_hint(path: Path) -> None:
    from edgeguard.web.auth import WEB_GROUP

    if os.geteuid() != 0:
        return
    try:
        grp.getgrnam(WEB_GROUP)
    except KeyError:
        print(f"edgeguard: note: there is no group {WEB_GROUP} yet, so the service cannot "
              f"read {path}; create the user (docs/web.md) and set the password again",
              file=sys.stderr)


@command("web", "serve the local upload page (a separate process from the daemon)")(_add)
def _web(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    from edgeguard.web.auth import PasswordFile, new_token

    passwords = PasswordFile(Path(cfg.web.password_file))
    if args.set_password:
        passwords.set(_read_secret())
        print(f"edgeguard: web password set (hash in {passwords.path})")
        _group_hint(passwords.path)
        return 0
    if args.generate_token:
        token = new_token()
        passwords.set(token)
        print(token)
        print(f"edgeguard: this token signs in to the web page; only its hash is kept "
              f"({passwords.path})", file=sys.stderr)
        _group_hint(passwords.path)
        return 0
    if not args.verbose:
        # A long-running command: its start and sign-ins are worth an INFO line (the
        # daemon's commands get this from cli._CHATTY).
        logging.getLogger("edgeguard.web").setLevel(logging.INFO)
    try:
        from edgeguard.web import server
    except ImportError as exc:
        raise StartupError(f"the web page needs the 'web' extra ({exc.name} is missing): "
                           "pip install 'edgeguard[web]'") from None
    return server.serve(cfg)
