"""Start the real `edgeguard web` process and a real headless Chromium for the web tests.

The web process is ``python -m edgeguard web`` with its own NOTIFY_SOCKET (READY=1 when it
listens), started in an empty working folder with TMPDIR pointing at another empty folder,
both on disk: a test can then show that neither ever receives a byte. The browser is
Debian's chromium driven by Python Playwright (its package carries the driver; no browser
is downloaded): ``executable_path=/usr/bin/chromium``.

The writes watcher samples ``/proc/PID/fd`` and ``fdinfo`` of the web process: every file
it holds open for writing, with its path, is recorded, so a test can assert that the only
files the web process ever wrote to were in the inbox on tmpfs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers.daemon import PATIENCE, REPO, NotifyListener, skip_or_fail, wait_notified_ready

CHROMIUM = Path("/usr/bin/chromium")
# As the machine notes prescribe for a closed network: no background fetches, no GPU.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_password(config: Path, secret: str = PASSWORD) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgeguard", "web", "--config", str(config),
                           "--set-password"], input=secret + "\n", text=True,
                          capture_output=True, cwd=REPO, timeout=60 * PATIENCE, check=False)
    assert proc.returncode == 0, proc.stderr


@dataclass
class WebProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    notify: NotifyListener
    url: str
    cwd: Path
    tmpdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_notified_ready("edgeguard web", self.proc, self.notify, self.output, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def web_process(config: Path, *, workdir: Path, scratch: Path) -> Iterator[WebProcess]:
    """`edgeguard web --config CONFIG --port N`, its working folder and TMPDIR empty folders
    under ``scratch`` (on disk)."""
    port = free_port()
    cwd = scratch / "cwd"
    tmpdir = scratch / "tmp"
    cwd.mkdir(parents=True)
    tmpdir.mkdir()
    listener = NotifyListener(workdir / f"web-notify-{uuid.uuid4().hex[:6]}.sock")
    log = workdir / "web.log"
    env = dict(os.environ)
    for key in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(key, None)
    env.update(NOTIFY_SOCKET=str(listener.path), PYTHONUNBUFFERED="1", TMPDIR=str(tmpdir),
               # Bytecode caches would be the web process's only disk writes; keep them
               # out so that the writes watcher's rule can be "the inbox and nothing else".
               PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgeguard", "web", "--config",
                                 str(config), "--port", str(port)], cwd=cwd, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    web = WebProcess(proc, log, listener, f"http://127.0.0.1:{port}", cwd, tmpdir)
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()
        listener.close()


@dataclass
class WritesWatcher:
    """Samples the files a process holds open for writing (every ``period`` seconds)."""

    pid: int
    period: float = 0.002
    written: set[str] = field(default_factory=set)
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        fd_dir = f"/proc/{self.pid}/fd"
        while not self._stop.is_set():
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                return
            for fd in fds:
                if fd in ("0", "1", "2"):
                    continue  # inherited from the test: its log on tmpfs, not opened by it
                try:
                    target = os.readlink(f"{fd_dir}/{fd}")
                    with open(f"/proc/{self.pid}/fdinfo/{fd}") as fh:
                        flags = next(int(line.split()[1], 8) for line in fh
                                     if line.startswith("flags:"))
                except (OSError, StopIteration, ValueError):
                    continue
                if target.startswith("/") and flags & (os.O_WRONLY | os.O_RDWR):
                    self.written.add(target)
            self.samples += 1
            time.sleep(self.period)

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(5)
        return self.written


def require_browser() -> None:
    if not CHROMIUM.exists():
        skip_or_fail("Debian's chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("Python playwright is not installed (pip install playwright; never "
                     "`playwright install`: the tests use /usr/bin/chromium)")


@contextlib.contextmanager
def browser() -> Iterator[object]:
    """A headless Chromium (Playwright Browser), closed afterwards."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                               headless=True)
        try:
            yield b
        finally:
            b.close()
