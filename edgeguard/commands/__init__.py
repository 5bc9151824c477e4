"""Subcommands; importing this package registers them with edgeguard.cli."""

from edgeguard.commands import (
    bench,  # noqa: F401
    blur,  # noqa: F401
    check,  # noqa: F401
    detect,  # noqa: F401
    models,  # noqa: F401
    run,  # noqa: F401
    snap,  # noqa: F401
    status,  # noqa: F401
    web,  # noqa: F401
)
