"""`edgeguard snap`: SIGUSR1 only to a daemon that handles it, else the trigger file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.daemon import PATIENCE

from edgeguard.cli import main
from edgeguard.commands.snap import catches

CHILD = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
if sys.argv[2] == "handler":
    signal.signal(signal.SIGUSR1, lambda s, f: out.write_text("snap"))
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture
def child(tmp_path: Path, request: pytest.FixtureRequest) -> subprocess.Popen[str]:
    mode = getattr(request, "param", "handler")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "got"), mode],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def setup(tmp_path: Path, pid: int | None, trigger: str = "",
          camera: dict[str, str] | None = None) -> Path:
    runtime = tmp_path / "run"
    runtime.mkdir()
    if pid is not None:
        state: dict[str, object] = {"pid": pid, "state": "running"}
        if camera is not None:
            state["camera"] = camera
        (runtime / "state.json").write_text(json.dumps(state))
    cfg = tmp_path / "edgeguard.toml"
    cfg.write_text(f'[daemon]\ninbox = "{runtime}/inbox"\nruntime_dir = "{runtime}"\n'
                   f'[camera]\ntrigger_file = "{trigger}"\n')
    return cfg


def wait_for(path: Path, timeout: float = 5.0 * PATIENCE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


def test_catches_reads_the_signal_mask(child: subprocess.Popen[str]) -> None:
    assert catches(child.pid, signal.SIGUSR1)
    assert not catches(child.pid, signal.SIGUSR2)
    assert not catches(999_999_999, signal.SIGUSR1)


def test_snap_signals_a_daemon_that_handles_sigusr1(tmp_path: Path,
                                                    child: subprocess.Popen[str]) -> None:
    cfg = setup(tmp_path, child.pid)
    assert main(["snap", "--config", str(cfg)]) == 0
    assert wait_for(tmp_path / "got")


def test_snap_says_so_when_the_camera_has_ended(tmp_path: Path, child: subprocess.Popen[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A file: camera at its end: the daemon still catches SIGUSR1, but no still would come.
    cfg = setup(tmp_path, child.pid, camera={"camera": "file:/x.mp4", "state": "ended"})
    assert main(["snap", "--config", str(cfg)]) == 3
    assert "camera file:/x.mp4 is ended" in capsys.readouterr().out
    time.sleep(0.2)
    assert not (tmp_path / "got").exists()


@pytest.mark.parametrize("child", ["plain"], indirect=True)
def test_snap_never_signals_a_process_without_a_handler(tmp_path: Path,
                                                        child: subprocess.Popen[str]) -> None:
    # SIGUSR1's default action would kill it: snap must not send it.
    cfg = setup(tmp_path, child.pid)
    assert main(["snap", "--config", str(cfg)]) == 3
    time.sleep(0.2)
    assert child.poll() is None


def test_snap_falls_back_to_the_trigger_file(tmp_path: Path) -> None:
    trigger = tmp_path / "snap.trigger"
    cfg = setup(tmp_path, None, trigger=str(trigger))
    assert main(["snap", "--config", str(cfg)]) == 0
    assert trigger.exists()


def test_snap_trigger_flag_skips_the_signal(tmp_path: Path,
                                            child: subprocess.Popen[str]) -> None:
    trigger = tmp_path / "snap.trigger"
    cfg = setup(tmp_path, child.pid, trigger=str(trigger))
    assert main(["snap", "--trigger", "--config", str(cfg)]) == 0
    assert trigger.exists() and not wait_for(tmp_path / "got", 0.3)


def test_snap_with_nothing_to_ask(tmp_path: Path) -> None:
    assert main(["snap", "--config", str(setup(tmp_path, None))]) == 3
