"""Run each measured tool as a child process and time it.

Every tool (EdgeGuard's ``detect`` per profile, ``blur``, the peers in their own virtual
environments, the codec floor) runs as its own child, one after another, so that none
disturbs another's timing and each one's peak memory is its own: ``os.wait4`` returns the
child's ``ru_maxrss`` (KiB on Linux). Each child is free to use every core.

Times reported as *processing* exclude interpreter start-up and model loading, which a
long-running daemon pays once:

- peers: the loop time the wrapper itself reports (``seconds``);
- codec floor: the loop time it reports;
- EdgeGuard: the child's wall time minus its start-up, where start-up is the wall time of a
  ``detect`` run over the set's first image less that image's own ``ms``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

STDERR_TAIL = 4000


class RunKind(enum.StrEnum):
    DETECT = "detect"  # edgeguard detect, one profile
    BLUR = "blur"  # edgeguard blur, the full file pipeline
    PEER = "peer"
    FLOOR = "floor"  # decode + JPEG q90 encode only


class Status(enum.StrEnum):
    OK = "ok"
    SKIPPED = "skipped"  # not installed / not applicable
    FAILED = "failed"  # the child exited non-zero or wrote nothing usable


@dataclass(frozen=True)
class PeerSpec:
    name: str
    label: str
    venv: str  # folder name under the peers dir
    script: str  # path under the shared tools dir


PEERS: dict[str, PeerSpec] = {
    "deface": PeerSpec("deface", "deface 1.5", ".venv-deface", "peers/deface_boxes.py"),
    "seed": PeerSpec("seed", "seed pipeline", ".venv-seed", "peers/seed_baseline.py"),
}


@dataclass(frozen=True)
class ChildRun:
    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    peak_rss_kib: int
    stderr_tail: str
    cpu_s: float = 0.0  # user + system CPU of the child, start-up included

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """One line saying why the child failed: its last stderr line and exit code."""
        lines = [ln for ln in self.stderr_tail.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        return f"exit {self.returncode}: {last[:200]}"


@dataclass(frozen=True)
class Measurement:
    """One tool over one set: what ran, how long, how much memory, where the result is."""

    tool: str  # display name
    kind: RunKind
    status: Status
    images: int
    profile: str | None = None
    note: str = ""
    result_path: Path | None = None
    wall_s: float | None = None
    seconds: float | None = None  # processing, excluding start-up
    startup_s: float | None = None
    peak_rss_kib: int | None = None
    cpu_s: float | None = None  # the child's user + system CPU seconds, start-up included
    per_image_ms: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def s_per_image(self) -> float | None:
        if self.seconds is None or self.images <= 0:
            return None
        return self.seconds / self.images

    @property
    def peak_rss_mb(self) -> float | None:
        return None if self.peak_rss_kib is None else self.peak_rss_kib / 1024.0


# The child is started by this small launcher, not by the benchmark itself: ru_maxrss is a
# process's high-water mark *including the address space it had before exec*, so a child
# forked straight from a 200 MB benchmark process would report at least 200 MB. Forked from
# a bare interpreter (python -S, ~10 MB) the figure is the child's own.
_LAUNCHER = """
import os, sys
report = int(sys.argv[1])
os.set_inheritable(report, False)
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
code = os.waitstatus_to_exitcode(status)
os.write(report, f"{code} {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}".encode())
"""


def run_child(argv: Sequence[str], *, stdout: IO[Any] | int | None = subprocess.DEVNULL,
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              clock: Callable[[], float] = time.perf_counter) -> ChildRun:
    """Run ``argv`` to completion; wall time, CPU time and the child's own peak RSS."""
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    with tempfile.TemporaryFile() as err:
        t0 = clock()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(write_fd), *argv],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=err,
                env=dict(env) if env is not None else None, cwd=cwd, pass_fds=(write_fd,),
                start_new_session=True)
        finally:
            os.close(write_fd)
        try:
            proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            os.close(read_fd)
            raise
        wall = clock() - t0
        with os.fdopen(read_fd, "rb") as fh:
            report = fh.read().decode().split()
        err.seek(0)
        tail = err.read()[-STDERR_TAIL:].decode("utf-8", "replace")
    if len(report) == 3:
        code, maxrss, cpu = int(report[0]), int(report[1]), float(report[2])
    else:  # the launcher itself failed (e.g. the program does not exist)
        code, maxrss, cpu = proc.returncode or 127, 0, 0.0
    return ChildRun(argv=tuple(argv), returncode=code, wall_s=wall, peak_rss_kib=maxrss,
                    stderr_tail=tail, cpu_s=cpu)


RunChild = Callable[..., ChildRun]


def _clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment without anything that points Python at another interpreter's packages."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in base.items() if k not in drop}


def _detect_lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(o, dict):
                out.append(o)
    return out


def _ms_of(lines: Sequence[Mapping[str, Any]]) -> list[float]:
    return [float(o["ms"]) for o in lines if isinstance(o.get("ms"), (int, float))]


@dataclass
class BenchRunner:
    """Builds and runs the children; everything from the outside world is passed in."""

    repo_root: Path
    python: str = sys.executable
    config: Path | None = None
    peers_dir: Path | None = None  # where .venv-deface / .venv-seed live; default repo_root
    tools_dir: Path | None = None  # ../shared/tools (peer wrappers)
    run: RunChild = run_child
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _startup: dict[tuple[str, str], float] = field(default_factory=dict)

    # -- environments -----------------------------------------------------------------------

    def edgeguard_env(self) -> dict[str, str]:
        env = _clean_env(self.environ)
        # `python -m edgeguard` must resolve to this checkout even when it is not installed.
        env["PYTHONPATH"] = str(self.repo_root)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _edgeguard_argv(self, sub: str, *args: str) -> list[str]:
        argv = [self.python, "-m", "edgeguard", sub, *args]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        return argv

    # -- EdgeGuard --------------------------------------------------------------------------

    def startup(self, profile: str, probe: Path, workdir: Path) -> float | None:
        """Start-up seconds of ``edgeguard detect`` for ``profile``, measured once per probe.

        Wall time of a run over the single image ``probe`` minus the ``ms`` it reports for
        that image: interpreter start, imports, model loading. None when the run fails.
        """
        key = (profile, str(probe))
        if key in self._startup:
            return self._startup[key]
        out = workdir / f"startup-{profile}.jsonl"
        with open(out, "wb") as fh:
            run = self.run(self._edgeguard_argv("detect", "--profile", profile,
                                                str(probe)),
                           stdout=fh, env=self.edgeguard_env(), cwd=self.repo_root)
        ms = _ms_of(_detect_lines(out)) if run.ok else []
        if not ms:
            logger.warning("start-up probe for profile %s failed: %s", profile, run.reason())
            return None
        value = max(0.0, run.wall_s - ms[0] / 1000.0)
        self._startup[key] = value
        return value

    def detect(self, files: Sequence[Path], profile: str, workdir: Path) -> Measurement:
        """``edgeguard detect --profile P`` over ``files``; result lines to a file."""
        name = f"edgeguard {profile}"
        out = workdir / f"edgeguard-{profile}.jsonl"
        startup = self.startup(profile, files[0], workdir)
        logger.info("%s: %d images", name, len(files))
        with open(out, "wb") as fh:
            run = self.run(self._edgeguard_argv("detect", "--profile", profile,
                                                *map(str, files)),
                           stdout=fh, env=self.edgeguard_env(), cwd=self.repo_root)
        lines = _detect_lines(out)
        if not run.ok and not lines:
            return Measurement(name, RunKind.DETECT, Status.FAILED, len(files), profile=profile,
                               note=run.reason(), wall_s=run.wall_s,
                               peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s)
        per_image_ms = tuple(_ms_of(lines))
        seconds = run.wall_s - startup if startup is not None else run.wall_s
        # The start-up comes from another process (the probe); on a busy machine it can take
        # longer than this run's own start-up, and the difference can even come out below the
        # time the child itself measured around its images. That time is the floor.
        seconds = max(seconds, sum(per_image_ms) / 1000.0)
        note = "" if run.ok else run.reason()
        if startup is None:
            note = "; ".join(filter(None, [note, "start-up not measured: time is wall time"]))
        errors = sum(1 for o in lines if "error" in o)
        return Measurement(name, RunKind.DETECT, Status.OK, len(files), profile=profile, note=note,
                           result_path=out, wall_s=run.wall_s, seconds=seconds,
                           startup_s=startup, peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s,
                           per_image_ms=per_image_ms,
                           extra={"errors": errors, "returncode": run.returncode})

    def blur(self, files: Sequence[Path], profile: str, workdir: Path) -> Measurement:
        """``edgeguard blur FILES -o DIR --profile P``: the full pipeline including encode."""
        name = f"edgeguard blur {profile}"
        startup = self.startup(profile, files[0], workdir)
        outdir = Path(tempfile.mkdtemp(prefix=f"blur-{profile}-", dir=workdir))
        logger.info("%s: %d images", name, len(files))
        try:
            run = self.run(self._edgeguard_argv("blur", *map(str, files), "-o", str(outdir),
                                                "--profile", profile),
                           stdout=subprocess.DEVNULL, env=self.edgeguard_env(),
                           cwd=self.repo_root)
            written = sum(1 for p in outdir.rglob("*") if p.is_file())
        finally:
            shutil.rmtree(outdir, ignore_errors=True)
        if not run.ok and written == 0:
            return Measurement(name, RunKind.BLUR, Status.FAILED, len(files), profile=profile,
                               note=run.reason(), wall_s=run.wall_s,
                               peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s)
        seconds = run.wall_s - startup if startup is not None else run.wall_s
        notes = [] if run.ok else [run.reason()]
        if written != len(files):
            notes.append(f"{written} of {len(files)} files written")
        if startup is None:
            notes.append("start-up not measured: time is wall time")
        return Measurement(name, RunKind.BLUR, Status.OK, len(files), profile=profile,
                           note="; ".join(notes), wall_s=run.wall_s, seconds=max(0.0, seconds),
                           startup_s=startup, peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s,
                           extra={"written": written, "returncode": run.returncode})

    # -- peers and the floor ----------------------------------------------------------------

    def peer_python(self, spec: PeerSpec) -> Path:
        return (self.peers_dir or self.repo_root) / spec.venv / "bin" / "python"

    def peer(self, spec: PeerSpec, files: Sequence[Path], workdir: Path) -> Measurement:
        py = self.peer_python(spec)
        script = self.tools_dir / spec.script if self.tools_dir is not None else None
        if not py.exists():
            return Measurement(spec.label, RunKind.PEER, Status.SKIPPED, len(files),
                               note=f"not installed: {py.parent.parent} missing "
                                    "(benchmarks/peers.sh)")
        if script is None or not script.is_file():
            return Measurement(spec.label, RunKind.PEER, Status.SKIPPED, len(files),
                               note=f"wrapper {script or spec.script} not found")
        out = workdir / f"{spec.name}.json"
        out.unlink(missing_ok=True)
        logger.info("%s: %d images", spec.label, len(files))
        run = self.run([str(py), str(script), "--json", str(out), *map(str, files)],
                       stdout=subprocess.DEVNULL, env=_clean_env(self.environ),
                       cwd=self.repo_root)
        reported: float | None = None
        if run.ok and out.is_file():
            try:
                with open(out, encoding="utf-8") as fh:
                    reported = float(json.load(fh)["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                reported = None
        if reported is None:
            return Measurement(spec.label, RunKind.PEER, Status.FAILED, len(files),
                               note=run.reason() if not run.ok else "no result written",
                               wall_s=run.wall_s, peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s)
        return Measurement(spec.label, RunKind.PEER, Status.OK, len(files), result_path=out,
                           wall_s=run.wall_s, seconds=reported,
                           startup_s=max(0.0, run.wall_s - reported),
                           peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s)

    def floor(self, files: Sequence[Path], workdir: Path) -> Measurement:
        """Decode + JPEG q90 encode of ``files`` in a child: the codec floor."""
        name = "codec floor"
        out = workdir / "floor.json"
        logger.info("%s: %d images", name, len(files))
        with open(out, "wb") as fh:
            run = self.run([self.python, "-m", "edgeguard.bench.floor", *map(str, files)],
                           stdout=fh, env=self.edgeguard_env(), cwd=self.repo_root)
        try:
            with open(out, encoding="utf-8") as fh:
                rep = json.load(fh)
            seconds = float(rep["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return Measurement(name, RunKind.FLOOR, Status.FAILED, len(files), note=run.reason(),
                               wall_s=run.wall_s, peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s)
        note = f"decode + JPEG q90 encode ({rep.get('backend', '?')})"
        if rep.get("errors"):
            note += f"; {rep['errors']} files failed"
        return Measurement(name, RunKind.FLOOR, Status.OK, len(files), note=note,
                           wall_s=run.wall_s, seconds=seconds,
                           startup_s=max(0.0, run.wall_s - seconds),
                           peak_rss_kib=run.peak_rss_kib, cpu_s=run.cpu_s,
                           per_image_ms=tuple(float(x) for x in rep.get("ms", ())),
                           extra={"backend": rep.get("backend")})
