"""`edgeguard run` with SIGKILL armed at one step: ``python killpoints.py run ARGS``.

The daemon is the real one (same CLI, pipeline, watcher, sinks); this launcher only wraps
a few of its functions before handing over to :func:`edgeguard.cli.main`. It lives with
the tests, not in the package, so production code carries no kill switch.

``EDGEGUARD_TEST_KILL_AT=STEP:N`` makes the process SIGKILL itself (what a power cut or
the OOM killer does: no handler, no cleanup) the N-th time any worker reaches STEP:

- ``decode``   decoding starts: the input is open, nothing is written anywhere
- ``detect``   the decoded pixels are about to go through the detector
- ``encode``   the redacted pixels are about to be encoded
- ``write``    half of the output's temporary file is on disk (a partial file)
- ``rename``   the journal says "publishing"; the rename into place has not happened
- ``renamed``  the output has its final name; the input is still in the inbox
- ``deleted``  the input is deleted; the journal record is still there
- ``fail``     a failure's reason file is written; the raw file is not yet in failed/

``EDGEGUARD_TEST_PHASE_LOG=PATH`` appends one line per step entered ("<thread> <step>")
to PATH, unbuffered, so after a kill at a random moment the last line of each worker
says which step it was in.

``EDGEGUARD_TEST_CGROUP=DIR`` moves the process into that cgroup (its ``cgroup.procs``)
before anything else, as systemd does for a unit with ``MemoryMax=``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = ("decode", "detect", "encode", "write", "rename", "renamed", "deleted", "fail")

_lock = threading.Lock()
_seen: dict[str, int] = {}
_target: tuple[str, int] | None = None
_log_fd: int | None = None


def _arm() -> None:
    global _target, _log_fd
    spec = os.environ.get("EDGEGUARD_TEST_KILL_AT", "")
    if spec:
        step, _, n = spec.partition(":")
        if step not in STEPS:
            raise SystemExit(f"killpoints: unknown step {step!r}; one of {STEPS}")
        _target = (step, int(n or "1"))
    log = os.environ.get("EDGEGUARD_TEST_PHASE_LOG", "")
    if log:
        _log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def reached(step: str) -> None:
    """Note ``step``; die here if it is the armed one."""
    if _log_fd is not None:
        os.write(_log_fd, f"{threading.current_thread().name} {step}\n".encode())
    if _target is None or _target[0] != step:
        return
    with _lock:
        _seen[step] = _seen.get(step, 0) + 1
        if _seen[step] == _target[1]:
            os.kill(os.getpid(), signal.SIGKILL)
            threading.Event().wait()  # SIGKILL is asynchronous: never run on


def _before(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        reached(step)
        return fn(*args, **kwargs)

    return wrapper


def _after(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        reached(step)
        return out

    return wrapper


def install() -> None:
    from edgeguard import codec
    from edgeguard.detect import detector
    from edgeguard.sinks import failed, fileops, outbox

    _arm()
    codec.decode_file = _before("decode", codec.decode_file)
    codec.encode = _before("encode", codec.encode)
    setattr(detector.FaceDetector, "detect",  # noqa: B010 - a method, wrapped in place
            _before("detect", detector.FaceDetector.detect))

    real_write = outbox.write_new

    def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        if path.name.endswith(".json" + outbox.TMP_SUFFIX):  # a sidecar: not this step
            return real_write(path, data, mode=mode)
        if _target is not None and _target[0] == "write":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            os.write(fd, data[: len(data) // 2])
            os.fsync(fd)
            os.close(fd)
            reached("write")
            os.unlink(path)  # not the armed round: undo, and write it properly
        else:
            reached("write")
        return real_write(path, data, mode=mode)

    outbox.write_new = write_new

    real_rename = fileops.rename_noreplace

    def rename_noreplace(src: Path, dst: Path) -> bool:
        name = Path(src).name
        if not name.startswith(fileops.TMP_PREFIX):  # an inbox claim, or a move to failed/
            if os.path.lexists(f"{dst}{failed.REASON_SUFFIX}"):
                reached("fail")
            return real_rename(src, dst)
        image = not name.endswith(".json" + outbox.TMP_SUFFIX)
        if image:
            reached("rename")
        out = real_rename(src, dst)
        if image:
            reached("renamed")
        return out

    # Every publish (outbox and failed/ alike) renames through fileops; so does the spool's
    # claim of an inbox file when it is imported after this.
    fileops.rename_noreplace = rename_noreplace
    outbox._remove_if_same = _after(
        "deleted", outbox._remove_if_same)


def join_cgroup() -> None:
    folder = os.environ.get("EDGEGUARD_TEST_CGROUP", "")
    if folder:
        with open(os.path.join(folder, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))


if __name__ == "__main__":
    join_cgroup()
    install()
    from edgeguard.cli import main

    sys.exit(main(sys.argv[1:]))
