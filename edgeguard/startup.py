"""Where the daemon's folders are, and the checks it runs before it starts.

`edgeguard run` stops at the first failing check with its one-line reason and a non-zero
exit; `edgeguard check` runs them all and reports each. There is no switch to allow a
disk-backed inbox: raw pixels never touch persistent storage (DESIGN invariant 1).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeguard import config, models, mounts
from edgeguard.config import Config
from edgeguard.errors import EdgeGuardError, OutputError, StartupError
from edgeguard.sinks.journal import Journal
from edgeguard.sinks.outbox import Outbox
from edgeguard.sources.spool import SPOOL_MODE, spool_for

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
    def spool(self) -> Path:
        """Where the daemon claims each arrival into, private to it (sources.spool)."""
        return spool_for(self.inbox)

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


# What one image costs in memory while it goes through the pipeline, per pixel: the
# decoded RGB, the decoder's own copy, redaction and encoding buffers. Measured peaks above
# the idle daemon: 6.8 bytes per pixel for a 64 MP PNG, 6.0 for a 48 MP JPEG.
BYTES_PER_PIXEL = 8
# The idle daemon (interpreter, OpenCV, Pillow, models: 77 MB measured) and headroom.
BASE_BYTES = 160 * 2**20
# The second model's working set, once per process (its inference is serialised): the
# network's activations for one 0.3 MP tile (about 240 bytes per input pixel: 77 MB
# measured) and the frame scaled for it.
SECOND_MODEL_BYTES = 96 * 2**20


def fixed_bytes(cfg: Config) -> int:
    """What the daemon needs whatever the images: BASE_BYTES, and the second model's
    working set when the config runs one."""
    from edgeguard.pipeline import second_model_name

    return BASE_BYTES + (SECOND_MODEL_BYTES if second_model_name(cfg) else 0)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def memory_limit(proc: Path = Path("/proc"), cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """Bytes this process may use: MemTotal, or less where a cgroup (systemd's
    MemoryMax=) limits it. None when neither can be read."""
    limits: list[int] = []
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        groups = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        groups = []
    for line in groups:
        _, _, rest = line.partition(":")
        controllers, sep, rel = rest.partition(":")
        if not sep:
            continue
        if controllers == "":  # cgroup v2: the limit of this group and of every parent
            folder, name = cgroup_root / rel.lstrip("/"), "memory.max"
        elif "memory" in controllers.split(","):  # cgroup v1
            folder, name = cgroup_root / "memory" / rel.lstrip("/"), "memory.limit_in_bytes"
        else:
            continue
        while True:
            try:
                text = (folder / name).read_text().strip()
                if text != "max" and int(text) < 2**60:
                    limits.append(int(text))
            except (OSError, ValueError):
                pass
            if folder in (cgroup_root, cgroup_root / "memory") or folder == folder.parent:
                break
            folder = folder.parent
    return min(limits) if limits else None


def fit_to_memory(cfg: Config, limit: int | None = None) -> Config:
    """``cfg`` with ``input.max_pixels`` lowered to what ``daemon.workers`` images at once
    fit in this device's memory (see :func:`memory_limit`), with a warning saying so.

    Without it, one small file that decodes to the default 64 MP (a 60 KB PNG of zeros)
    takes over 500 MB: on a Pi Zero 2 W the service is killed for memory, restarted, finds
    the file in the inbox again, and is killed again, for good. Refused instead, it ends in
    failed/ with its reason.
    """
    if limit is None:
        limit = memory_limit()
    if limit is None:
        return cfg
    workers = cfg.daemon.workers
    fixed = fixed_bytes(cfg)
    allowed = max(1_000_000, (limit - fixed) // (BYTES_PER_PIXEL * workers))
    if cfg.input.max_pixels <= allowed:
        return cfg
    logger.warning("input.max_pixels = %d: %d image(s) that large at once need about %d MB, "
                   "more than the %d MB this service may use; images above %.1f MP are "
                   "refused (lower input.max_pixels or daemon.workers to choose)",
                   cfg.input.max_pixels, workers,
                   (fixed + cfg.input.max_pixels * BYTES_PER_PIXEL * workers) >> 20,
                   limit >> 20, allowed / 1e6)
    return config.override(cfg, "input", max_pixels=int(allowed))


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def default_base(is_tmpfs: Callable[[Path], bool] = mounts.is_tmpfs) -> Path:
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


def _existing(path: Path) -> Path:
    """``path`` or, when it does not exist yet, its nearest existing parent."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _folder(path: Path, mode: int, create: bool) -> Path:
    """The folder to look at: ``path`` (made when ``create``), else the existing parent
    the daemon would create it in; StartupError when something else is in the way."""
    if create:
        _make_dir(path, mode)
        return path
    there = _existing(path)
    if not there.is_dir():
        raise StartupError(f"{there} is not a folder")
    return there


def _writable(label: str, path: Path, there: Path) -> str:
    if not os.access(there, os.W_OK | os.X_OK):
        if there == path:
            raise StartupError(f"{label} {path} is not writable by this user")
        raise StartupError(f"{label} {path} does not exist and cannot be created: {there} "
                           "is not writable by this user")
    return "" if there == path else f" (created at start, in {there})"


def check_layout(paths: Paths) -> str:
    for name, a, others in (
        ("outbox", paths.outbox, (paths.inbox, paths.failed, paths.spool)),
        ("failed/", paths.failed, (paths.inbox, paths.spool)),
    ):
        for other in others:
            if _inside(a, other) or _inside(other, a):
                raise StartupError(f"the {name} {a} and {other} must not contain each other")
    # The state file and journal must not show up as inputs or outputs.
    for name, other in (("inbox", paths.inbox), ("outbox", paths.outbox),
                        ("failed/", paths.failed), ("spool", paths.spool)):
        if _inside(paths.runtime, other):
            raise StartupError(f"the runtime folder {paths.runtime} must not be in the "
                               f"{name} {other}")
    return "inbox, outbox, failed/ and runtime folder are separate"


def check_tmpfs(label: str, path: Path, mode: int,
                is_tmpfs: Callable[[Path], bool] = mounts.is_tmpfs, *,
                create: bool = True) -> str:
    there = _folder(path, mode, create)
    if not is_tmpfs(there):
        raise StartupError(
            f"{label} {path} is not on tmpfs: raw images must never touch persistent storage "
            "(use a folder under /run or /dev/shm)")
    note = _writable(label, path, there)
    return f"{label} {path} is on tmpfs and writable{note}"


def check_same_fs(paths: Paths) -> str:
    try:
        same = _existing(paths.inbox).stat().st_dev == _existing(paths.failed).stat().st_dev
    except OSError as exc:
        raise StartupError(f"cannot compare the inbox and failed/: {exc}") from None
    if not same:
        raise StartupError(f"failed/ {paths.failed} must be on the same tmpfs as the inbox "
                           f"{paths.inbox} (a failed file moves by one rename, never a copy)")
    return "inbox and failed/ share one tmpfs"


def check_spool(paths: Paths, *, create: bool = True) -> str:
    """The spool is the service's own folder, private (0700), on the inbox's tmpfs (a
    claim is one rename). The daemon makes it private at start; a check only looks."""
    spool = paths.spool
    there = _folder(spool, SPOOL_MODE, create)
    try:
        st = os.lstat(there)
        same = st.st_dev == _existing(paths.inbox).stat().st_dev
    except OSError as exc:
        raise StartupError(f"cannot look at the spool {spool}: {exc.strerror}") from None
    if not same:
        raise StartupError(f"the spool {spool} must be on the same tmpfs as the inbox "
                           f"{paths.inbox} (each arrival is claimed by one rename)")
    if there != spool:
        note = _writable("spool", spool, there)
        return f"spool {spool} is on the inbox's tmpfs{note}"
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise StartupError(f"the spool {spool} must be a folder owned by this user (uid "
                           f"{os.geteuid()}); remove whatever is there")
    if stat.S_IMODE(st.st_mode) != SPOOL_MODE:
        if not create:
            return f"spool {spool} is this user's (mode {stat.S_IMODE(st.st_mode):04o}: " \
                   "made 0700 at start)"
        try:
            os.chmod(spool, SPOOL_MODE)
        except OSError as exc:
            raise StartupError(f"cannot make the spool {spool} private: {exc.strerror}") from None
    return f"spool {spool} is private (0700) and on the inbox's tmpfs"


def check_outbox(paths: Paths, *, create: bool = True) -> str:
    if not create:
        there = _folder(paths.outbox, 0o755, create)
        note = _writable("outbox", paths.outbox, there)
        return f"outbox {paths.outbox} is writable{note}"
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


def checks(cfg: Config, paths: Paths, *,
           create: bool = True) -> list[tuple[str, Callable[[], str]]]:
    """The start-up checks in order, as (name, run) pairs; run raises StartupError.

    ``create``: make missing folders, as the daemon does at start; without it (`edgeguard
    check`) nothing is created or changed, and a missing folder is checked where it would
    be made."""
    return [
        ("layout", lambda: check_layout(paths)),
        ("inbox", lambda: check_tmpfs("inbox", paths.inbox, 0o770, create=create)),
        ("failed", lambda: check_tmpfs("failed/", paths.failed, 0o700, create=create)),
        ("runtime", lambda: check_tmpfs("runtime folder", paths.runtime, 0o711,
                                        create=create)),
        ("same-fs", lambda: check_same_fs(paths)),
        ("spool", lambda: check_spool(paths, create=create)),
        ("outbox", lambda: check_outbox(paths, create=create)),
        ("models", lambda: check_models(cfg)),
        ("camera", lambda: _check_camera(cfg)),
    ]


def _check_camera(cfg: Config) -> str:
    from edgeguard.camera.loop import check_camera  # lazy: camera adapters load on demand

    return check_camera(cfg)


def run_checks(cfg: Config, paths: Paths, *, stop_at_first: bool,
               create: bool = True) -> list[CheckResult]:
    results: list[CheckResult] = []
    for name, run in checks(cfg, paths, create=create):
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
