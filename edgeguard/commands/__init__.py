"""Subcommands; importing this package registers them with edgeguard.cli."""

from edgeguard.commands import (
    blur,  # noqa: F401
    detect,  # noqa: F401
    models,  # noqa: F401
)
