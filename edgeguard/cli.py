"""Command-line entry point: `edgeguard run | blur | detect | check | status | models | bench`.

Each subcommand is a small function registered in ``_COMMANDS``; handlers for logging are
set up here only. User mistakes end as one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from edgeguard import __version__
from edgeguard.errors import EdgeGuardError

logger = logging.getLogger(__name__)

# name -> (help, add_arguments, handler); subcommand modules register themselves here.
Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]],
                                              Callable[[Handler], Handler]]:
    """Register a subcommand: ``@command(name, help)(add_arguments)(handler)``."""

    def with_args(add: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
        def with_handler(handler: Handler) -> Handler:
            _COMMANDS[name] = (help, add, handler)
            return handler

        return with_handler

    return with_args


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="edgeguard", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edgeguard {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, add, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # -v after the command name too (`edgeguard blur -v ...`); SUPPRESS keeps a -v given
        # before it, which a default here would overwrite.
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more output (per-file lines, debug logs)")
        add(p)
    return parser


def _load_commands() -> None:
    # Importing the modules registers their subcommands.
    from edgeguard import commands  # noqa: F401


# Long-running commands log their progress; one-shot commands only warnings and errors.
_CHATTY = {"run", "bench", "models", "web"}


def setup_logging(verbose: int, command_name: str) -> None:
    from edgeguard.service import configure_logging

    if verbose:
        level = logging.DEBUG
    else:
        level = logging.INFO if command_name in _CHATTY else logging.WARNING
    configure_logging(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.command)
    _, _, handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except EdgeGuardError as exc:
        print(f"edgeguard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
