"""Poison-file guard: how often the daemon died while it was processing an inbox file.

Before a file goes through the pipeline a marker named after its identity (device, inode,
size, mtime) is written in the runtime folder (tmpfs); it is removed when the file ends as
an output, a failure or a deferral. A marker still there at the next start means the daemon
died with the file in hand: a crash, the watchdog's abort of a hang, the kernel's OOM
killer. The inbox is the queue, so without this a file that kills the daemon would be taken
again at every start until systemd gave up, and nothing else would get through. After
``limit`` such deaths the file is recorded as failed instead (invariant 4: every file ends
as one output or one recorded failure).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from edgeguard.sinks.journal import Identity

logger = logging.getLogger(__name__)


class Attempts:
    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit

    def open(self) -> None:
        self.folder.mkdir(mode=0o700, exist_ok=True)

    def _marker(self, identity: Identity) -> Path:
        return self.folder / f"{identity.dev}-{identity.ino}-{identity.size}-{identity.mtime_ns}"

    def deaths(self, identity: Identity) -> int:
        """How many times the daemon died while processing this file."""
        try:
            return int(self._marker(identity).read_text() or "0")
        except (FileNotFoundError, ValueError):
            return 0

    def begin(self, identity: Identity) -> int:
        """Mark the file as in hand; returns the deaths counted so far.

        The marker holds deaths + 1 while the file is processed, so if the daemon dies now
        the next start reads one more death."""
        deaths = self.deaths(identity)
        try:
            self._marker(identity).write_text(str(deaths + 1))
        except OSError as exc:  # a full tmpfs must not stop the work: the guard is best effort
            logger.warning("cannot record a processing attempt (%s)", exc.strerror)
        return deaths

    def end(self, identity: Identity) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._marker(identity))
