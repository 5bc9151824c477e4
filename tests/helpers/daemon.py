"""Start the real `edgeguard run` process and listen on a real NOTIFY_SOCKET.

Nothing here fakes the daemon: it is ``python -m edgeguard run`` with the real inotify
watcher, the real pipeline and models, on real tmpfs folders. The NOTIFY_SOCKET is an
AF_UNIX datagram socket the test binds, as systemd would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeguard import mounts

REPO = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("EDGEGUARD_REQUIRE_SYSTEM") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip, unless EDGEGUARD_REQUIRE_SYSTEM=1 makes a missing prerequisite a failure."""
    if REQUIRE:
        pytest.fail(f"EDGEGUARD_REQUIRE_SYSTEM=1: {reason}")
    pytest.skip(reason)


def require_models() -> None:
    """Skip (or fail, see skip_or_fail) unless every model is fetched and unaltered."""
    from edgeguard import models
    from edgeguard.errors import EdgeGuardError

    try:
        models.verify_all(models.default_models_dir())
    except EdgeGuardError as exc:
        skip_or_fail(f"models not available ({exc}); run `edgeguard models fetch`")


# Liveness bounds, not speed targets: a shared or emulated (ARM under qemu) machine can be
# many times slower than a quiet one, and a wait returns as soon as its condition holds,
# so the bound is generous. EDGEGUARD_TEST_PATIENCE scales every bound further.
PATIENCE = 4.0 * float(os.environ.get("EDGEGUARD_TEST_PATIENCE", "1"))


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


@dataclass
class NotifyListener:
    """The systemd side of sd_notify: a bound datagram socket and what arrived, timed."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                for line in data.decode().splitlines():
                    self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "") -> list[tuple[float, str]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def wait(self, prefix: str, timeout: float = 30.0, after: float = 0.0) -> str:
        found: list[str] = []

        def seen() -> bool:
            found[:] = [m for t, m in self.lines(prefix) if t >= after]
            return bool(found)

        wait_for(seen, timeout, f"sd_notify {prefix!r}")
        return found[0]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def wait_notified_ready(name: str, proc: subprocess.Popen[bytes], notify: NotifyListener,
                        output: Callable[[], str], timeout: float) -> None:
    """Until ``proc`` sends READY=1 to ``notify``; fails at once if it exits first. The
    timeout is scaled by PATIENCE: start-up loads models, slow on a loaded or emulated
    machine."""
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m == "READY=1" for _, m in notify.lines("READY=1")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode} before READY=1:\n"
                                 f"{output()}")
        time.sleep(0.02)
    raise AssertionError(f"{name} sent no READY=1 within {timeout} s:\n{output()}")


@dataclass
class Daemon:
    """One `edgeguard run` process."""

    proc: subprocess.Popen[bytes]
    log: Path
    notify: NotifyListener

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_notified_ready("daemon", self.proc, self.notify, self.output, timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout * PATIENCE)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def rss_kb(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{key} not in /proc/{self.pid}/status")


def start_daemon(args: list[str], *, workdir: Path, env: dict[str, str] | None = None,
                 notify: NotifyListener | None = None,
                 entry: list[str] | None = None) -> Daemon:
    """Start `python -m edgeguard run ARGS` with NOTIFY_SOCKET bound in ``workdir``.

    ``entry`` replaces ``-m edgeguard`` (a script that wraps the same CLI, e.g. with fault
    injection: see helpers/killpoints.py and :func:`hang_on`)."""
    listener = notify or NotifyListener(workdir / f"notify-{uuid.uuid4().hex[:6]}.sock")
    log = workdir / f"daemon-{uuid.uuid4().hex[:6]}.log"
    full_env = dict(os.environ)
    for key in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
        full_env.pop(key, None)
    full_env["NOTIFY_SOCKET"] = str(listener.path)
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, *(entry or ["-m", "edgeguard"]), "run", *args],
                                cwd=REPO,
                                env=full_env, stdout=fh, stderr=subprocess.STDOUT)
    return Daemon(proc, log, listener)


def hang_on(needle: str) -> list[str]:
    """The ``entry`` of a daemon whose workers hang on files named like ``needle``
    (helpers/hang.py)."""
    return [str(REPO / "tests" / "helpers" / "hang.py"), needle]


@contextlib.contextmanager
def running(args: list[str], *, workdir: Path, env: dict[str, str] | None = None,
            notify: NotifyListener | None = None, ready: bool = True,
            entry: list[str] | None = None) -> Iterator[Daemon]:
    d = start_daemon(args, workdir=workdir, env=env, notify=notify, entry=entry)
    try:
        if ready:
            d.wait_ready()
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        if notify is None:
            d.notify.close()


def shm_dir() -> Path:
    """A fresh folder on tmpfs (/dev/shm), removed by the caller."""
    base = Path("/dev/shm")
    if not base.is_dir() or not mounts.is_tmpfs(base):
        skip_or_fail("/dev/shm is not a tmpfs here")
    path = base / f"edgeguard-test-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    return path


def mount_tmpfs(target: Path, size: str, *, readonly: bool = False) -> None:
    """Mount a fresh tmpfs of ``size`` (e.g. "512k") at ``target``; skip when we cannot."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    target.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (",ro" if readonly else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "edgeguard-test", str(target)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {proc.stderr.strip()}")


def remount(target: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(target)], check=True)


def umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
