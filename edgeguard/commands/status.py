"""`edgeguard status`: what the daemon reports in its state file."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from typing import Any

from edgeguard import startup
from edgeguard.cli import command
from edgeguard.commands.run import add_daemon_args, load_config
from edgeguard.state import STATE_FILE, read_state


def _add(p: argparse.ArgumentParser) -> None:
    add_daemon_args(p)
    p.add_argument("--json", action="store_true", help="print the state file as JSON")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if d or h:
        parts.append(f"{h}h")
    if d or h or m:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def render(snap: dict[str, Any], *, running: bool, now: float) -> str:
    lines = []
    if running:
        lines.append(f"edgeguard: running (pid {snap['pid']}), up "
                     f"{_duration(now - snap['started_at'])}")
    else:
        when = datetime.fromtimestamp(snap["updated_at"]).isoformat(sep=" ", timespec="seconds")
        lines.append(f"edgeguard: not running (last state from {when})")
    lines.append(f"processed {snap['processed']}, failed {snap['failed']}, "
                 f"faces {snap['faces']} (+{snap.get('weak', 0)} weak regions), "
                 f"queued {snap.get('queued', 0)}, "
                 f"in progress {snap.get('in_flight', 0)}")
    lat = snap.get("latency_ms") or {}
    lines.append(f"latency p50 {_ms(lat.get('p50'))}, p95 {_ms(lat.get('p95'))} "
                 f"(last {lat.get('count', 0)} images)")
    if snap.get("outbox_blocked"):
        lines.append("outbox: not writable, retrying (files wait in the inbox)")
    if snap.get("last_error"):
        at = snap.get("last_error_at")
        stamp = datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds") if at else "?"
        lines.append(f"last error ({stamp}): {snap['last_error']}")
    else:
        lines.append("last error: none")
    for v in snap.get("videos") or ():
        from edgeguard.video.item import describe

        lines.append("video in progress: " + describe(v))
    lines.append(f"inbox {snap.get('inbox')}  outbox {snap.get('outbox')}"
                 + (f"  failed/ {snap['failed_dir']}" if snap.get("failed_dir") else ""))
    if "camera" in snap:
        from edgeguard.camera.status import render_status

        lines.append(render_status(snap["camera"]))
    return "\n".join(lines)


@command("status", "show the daemon's counts, last error, latency and uptime")(_add)
def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    runtime = startup.resolve_paths(cfg).runtime
    if not cfg.daemon.inbox and not cfg.daemon.runtime_dir:
        # No folders configured: the service's /run/edgeguard (which this user may not be
        # able to write, so the default resolution skips it) or this user's /dev/shm one.
        for base in (startup.RUN_BASE, runtime):
            if (base / STATE_FILE).exists():
                runtime = base
                break
    try:
        snap = read_state(runtime)
    except FileNotFoundError:
        print(f"edgeguard: not running here (no {runtime / STATE_FILE})")
        return 3
    except (OSError, ValueError) as exc:
        print(f"edgeguard: cannot read {runtime / STATE_FILE}: {exc}")
        return 1
    running = snap.get("state") != "stopped" and _alive(int(snap.get("pid", 0)))
    if args.json:
        print(json.dumps(snap | {"running": running}, indent=1, sort_keys=True))
    else:
        print(render(snap, running=running, now=time.time()))
    return 0 if running else 3
