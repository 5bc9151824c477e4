"""`edgeguard snap`: ask the running daemon's camera for a redacted still now.

Two ways in, tried in this order:

1. SIGUSR1 to the daemon whose PID is in its state file (``<runtime_dir>/state.json``),
   only after /proc/PID/status shows the process catches SIGUSR1: SIGUSR1's default action
   is to terminate, so a daemon without a camera handler must never receive it;
2. the trigger file (``camera.trigger_file``), created here; the camera loop polls for it
   and removes it, one file, one still. This also works for users who may not signal the
   service (it runs as another user): give them write access to the file's folder.

``--trigger`` skips the signal. Exit codes: 0 asked, 3 no daemon/camera to ask, 1 error.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from edgeguard import startup
from edgeguard.cli import command
from edgeguard.commands.run import add_daemon_args, load_config
from edgeguard.state import STATE_FILE, read_state


def catches(pid: int, sig: int, *, proc: Path = Path("/proc")) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (the SigCgt mask in its status)."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            try:
                mask = int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                return False
            return bool(mask >> (sig - 1) & 1)
    return False


def touch_trigger(path: Path) -> None:
    """Create the trigger file (an existing one already asks for a still)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o664)
    os.close(fd)


def _add(p: argparse.ArgumentParser) -> None:
    add_daemon_args(p)
    p.add_argument("--trigger", action="store_true",
                   help="use the trigger file (camera.trigger_file), not SIGUSR1")


@command("snap", "ask the running daemon's camera for a redacted still now")(_add)
def _snap(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not args.trigger:
        paths = startup.resolve_paths(cfg)
        try:
            snap = read_state(paths.runtime)
        except FileNotFoundError:
            snap = None
        except (OSError, ValueError) as exc:
            print(f"edgeguard: cannot read {paths.runtime / STATE_FILE}: {exc}")
            snap = None
        pid = int(snap.get("pid", 0)) if snap and snap.get("state") != "stopped" else 0
        cam = (snap or {}).get("camera") or {}
        if pid > 0 and isinstance(cam, dict) and cam.get("state") not in (None, "running"):
            # The daemon runs on, but its camera does not (a file: source at its end, a
            # failed camera): a signal would be caught and give nothing.
            print(f"edgeguard: the daemon's camera {cam.get('camera', '')} is "
                  f"{cam.get('state')}; no still can be taken")
            return 3
        if pid > 0 and catches(pid, signal.SIGUSR1):
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            except PermissionError:
                if not cfg.camera.trigger_file:
                    print(f"edgeguard: not allowed to signal the daemon (pid {pid}); set "
                          "camera.trigger_file or run as the service's user")
                    return 1
            else:
                print(f"asked the daemon (pid {pid}) for a still")
                return 0
    if cfg.camera.trigger_file:
        path = Path(cfg.camera.trigger_file)
        try:
            touch_trigger(path)
        except OSError as exc:
            print(f"edgeguard: cannot create the trigger file {path}: {exc.strerror or exc}")
            return 1
        print(f"trigger file {path} created; the camera takes a still when it sees it")
        return 0
    print("edgeguard: no running daemon with a camera to ask (it does not handle SIGUSR1) "
          "and no camera.trigger_file configured")
    return 3
