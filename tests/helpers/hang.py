"""`edgeguard run` whose workers hang on chosen files: ``python hang.py NEEDLE run ARGS``.

A worker handed a file whose name contains NEEDLE waits forever inside the pipeline, as
one wedged in a decoder would, so a test can watch the watchdog pings stop (and systemd
restart the service). The daemon is the real one (same CLI, pipeline, watcher, sinks):
this launcher only wraps :meth:`Pipeline.redact_file` before handing over to
:func:`edgeguard.cli.main`. It lives with the tests, so the product carries no hang switch,
and needs nothing but edgeguard: the systemd test copies it into the container.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from pathlib import Path

logger = logging.getLogger("edgeguard.tests.hang")


def install(needle: str) -> None:
    """Make every Pipeline's workers hang on files whose name contains ``needle``."""
    from edgeguard.pipeline import Pipeline, Redacted

    real = Pipeline.redact_file

    @functools.wraps(real)
    def redact_file(self: Pipeline, path: Path) -> Redacted:
        name = str(path)
        if name.startswith("/proc/self/fd/"):
            name = os.readlink(path)  # the daemon passes its descriptor; this is the file
        if needle in os.path.basename(name):
            logger.warning("hang.py: hanging on purpose on %s", os.path.basename(name))
            threading.Event().wait()
        return real(self, path)

    Pipeline.redact_file = redact_file  # type: ignore[method-assign]


if __name__ == "__main__":
    if len(sys.argv) < 3 or not sys.argv[1]:
        raise SystemExit("usage: hang.py NEEDLE run [ARGS...]")
    install(sys.argv[1])
    from edgeguard.cli import main

    sys.exit(main(sys.argv[2:]))
