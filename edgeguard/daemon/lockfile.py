"""The runtime folder's lock: one daemon per inbox, spool and journal."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from edgeguard.errors import StartupError


class LockFile:
    """An exclusive ``flock`` on ``path`` holding this process's id, held while open."""

    def __init__(self, path: Path, *, runtime: Path) -> None:
        self.path = path
        self.runtime = runtime
        self._fd: int | None = None

    def __enter__(self) -> LockFile:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"another edgeguard daemon is running on {self.runtime} "
                               f"(lock {self.path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
