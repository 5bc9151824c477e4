"""Where the daemon's folders are, and the checks it runs before it starts.

`edgeguard run` stops at the first failing check with its one-line reason and a non-zero
exit; `edgeguard check` runs them all and reports each. There is no switch to allow a
disk-backed inbox: raw pixels never touch persistent storage (DESIGN invariant 1).
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeguard import fsutil, models
from edgeguard.config import Config
from edgeguard.errors import EdgeGuardError, OutputError, StartupError
from edgeguard.sinks.journal import Journal
from edgeguard.sinks.outbox import Outbox

logger = logging.getLogger(__name__)

RUN_BASE = Path("/run/edgeguard")
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Paths:
    """The daemon's folders, absolute."""

    inbox: Path
    outbox: Path
    failed: Path
    runtime: Path

    @property
    def journal(self) -> Path:
        return self.runtime / "journal"

    @property
    def lock(self) -> Path:
        return self.runtime / "daemon.lock"

    @property
    def reserve(self) -> Path:
        """Space the journal gives up when the tmpfs is full (see sinks.journal)."""
        return self.runtime / "journal.reserve"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def default_base(is_tmpfs: Callable[[Path], bool] = fsutil.is_tmpfs) -> Path:
    """/run/edgeguard when it is (or can be made) a writable folder on tmpfs, else
    /dev/shm/edgeguard-$USER."""
    run = RUN_BASE
    probe = run if run.exists() else run.parent
    if os.access(probe, os.W_OK | os.X_OK) and is_tmpfs(probe):
        return run
    return SHM / f"edgeguard-{_user()}"


def resolve_paths(cfg: Config, *, base: Callable[[], Path] = default_base) -> Paths:
    d = cfg.daemon
    inbox = Path(d.inbox) if d.inbox else base() / "inbox"
    inbox = Path(os.path.abspath(inbox))
    failed = Path(os.path.abspath(d.failed)) if d.failed else inbox.parent / "failed"
    outbox = Path(os.path.abspath(d.outbox or "outbox"))
    runtime = Path(os.path.abspath(d.runtime_dir)) if d.runtime_dir else inbox.parent
    return Paths(inbox=inbox, outbox=outbox, failed=failed, runtime=runtime)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or below it."""
    return a == b or b in a.parents


def _make_dir(path: Path, mode: int) -> None:
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create {path}: {exc.strerror}") from None
    if not path.is_dir():
        raise StartupError(f"{path} is not a folder")


def check_layout(paths: Paths) -> str:
    for name, a, others in (
        ("outbox", paths.outbox, (paths.inbox, paths.failed)),
        ("failed/", paths.failed, (paths.inbox,)),
    ):
        for other in others:
            if _inside(a, other) or _inside(other, a):
                raise StartupError(f"the {name} {a} and {other} must not contain each other")
    # The state file and journal must not show up as inputs or outputs.
    for name, other in (("inbox", paths.inbox), ("outbox", paths.outbox),
                        ("failed/", paths.failed)):
        if _inside(paths.runtime, other):
            raise StartupError(f"the runtime folder {paths.runtime} must not be in the "
                               f"{name} {other}")
    return "inbox, outbox, failed/ and runtime folder are separate"


def check_tmpfs(label: str, path: Path, mode: int,
                is_tmpfs: Callable[[Path], bool] = fsutil.is_tmpfs) -> str:
    _make_dir(path, mode)
    if not is_tmpfs(path):
        raise StartupError(
            f"{label} {path} is not on tmpfs: raw images must never touch persistent storage "
            "(use a folder under /run or /dev/shm)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"{label} {path} is not writable by this user")
    return f"{label} {path} is on tmpfs and writable"


def check_same_fs(paths: Paths) -> str:
    try:
        same = paths.inbox.stat().st_dev == paths.failed.stat().st_dev
    except OSError as exc:
        raise StartupError(f"cannot compare the inbox and failed/: {exc}") from None
    if not same:
        raise StartupError(f"failed/ {paths.failed} must be on the same tmpfs as the inbox "
                           f"{paths.inbox} (a failed file moves by one rename, never a copy)")
    return "inbox and failed/ share one tmpfs"


def check_outbox(paths: Paths) -> str:
    _make_dir(paths.outbox, 0o755)
    try:
        Outbox(paths.outbox, Journal(paths.journal)).writable()
    except OutputError as exc:
        raise StartupError(str(exc)) from None
    return f"outbox {paths.outbox} is writable"


def check_models(cfg: Config, verify: Callable[[Path], object] | None = None) -> str:
    """The models are present and match their SHA-256 (``edgeguard models verify``)."""
    models_dir = models.resolve_dir(cfg.detect.models_dir)
    try:
        (verify or models.verify_all)(models_dir)
    except EdgeGuardError as exc:
        raise StartupError(str(exc)) from None
    return f"models in {models_dir} match their SHA-256"


def checks(cfg: Config, paths: Paths) -> list[tuple[str, Callable[[], str]]]:
    """The start-up checks in order, as (name, run) pairs; run raises StartupError."""
    return [
        ("layout", lambda: check_layout(paths)),
        ("inbox", lambda: check_tmpfs("inbox", paths.inbox, 0o770)),
        ("failed", lambda: check_tmpfs("failed/", paths.failed, 0o700)),
        ("runtime", lambda: check_tmpfs("runtime folder", paths.runtime, 0o711)),
        ("same-fs", lambda: check_same_fs(paths)),
        ("outbox", lambda: check_outbox(paths)),
        ("models", lambda: check_models(cfg)),
        ("camera", lambda: _check_camera(cfg)),
    ]


def _check_camera(cfg: Config) -> str:
    from edgeguard.camera.loop import check_camera  # lazy: camera adapters load on demand

    return check_camera(cfg)


def run_checks(cfg: Config, paths: Paths, *, stop_at_first: bool) -> list[CheckResult]:
    results: list[CheckResult] = []
    for name, run in checks(cfg, paths):
        try:
            results.append(CheckResult(name, True, run()))
        except StartupError as exc:
            results.append(CheckResult(name, False, str(exc)))
            if stop_at_first:
                break
    return results


def require(cfg: Config, paths: Paths) -> None:
    """Raise StartupError with the first failing check's one-line reason."""
    for result in run_checks(cfg, paths, stop_at_first=True):
        if not result.ok:
            raise StartupError(result.detail)
        logger.debug("check %s: %s", result.name, result.detail)
