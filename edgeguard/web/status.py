"""The status panel: what the daemon reports in its state file, nothing more.

The daemon writes ``<runtime>/state.json`` (counts, latency, the last error's text, the
camera's state); this module reads it and passes on a fixed set of fields. It never holds
image data, and the web process has no access to failed/, so "recent failures" are
reasons only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeguard.state import STATE_FILE

MAX_STATE_BYTES = 1 << 20
_COUNTS = ("processed", "failed", "refused", "faces", "weak", "retries", "queued", "in_flight",
           "backlog")
_VIDEO = ("name", "frames_done", "frames_total", "fps", "eta_s")
_CAMERA = ("state", "camera", "source", "fps", "detect_ms", "detect_ms_p95", "frames",
           "failed", "blanked", "dropped", "missed", "stills", "video_segments", "last_error")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (the service's): it exists
    return True


def read_state(runtime: Path) -> dict[str, Any] | None:
    """The daemon's last snapshot, or None when there is none (or it cannot be read)."""
    try:
        with open(runtime / STATE_FILE, "rb") as fh:
            data = fh.read(MAX_STATE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_STATE_BYTES:
        return None
    try:
        snap = json.loads(data)
    except ValueError:
        return None
    return snap if isinstance(snap, dict) else None


def panel(snap: dict[str, Any] | None) -> dict[str, Any]:
    """The fields the page shows; ``running`` is False when there is no live daemon."""
    if snap is None:
        return {"running": False, "state": "not running", "counts": {}, "latency_ms": {},
                "last_error": None, "last_error_at": None, "camera": None, "videos": []}
    pid = snap.get("pid")
    running = (snap.get("state") != "stopped" and isinstance(pid, int) and _alive(pid))
    raw_lat, raw_cam = snap.get("latency_ms"), snap.get("camera")
    lat: dict[str, Any] = raw_lat if isinstance(raw_lat, dict) else {}
    cam: dict[str, Any] | None = raw_cam if isinstance(raw_cam, dict) else None
    return {
        "running": running,
        "state": snap.get("state") if running else "not running",
        "version": snap.get("version"),
        "started_at": snap.get("started_at"),
        "updated_at": snap.get("updated_at"),
        "counts": {k: snap[k] for k in _COUNTS if isinstance(snap.get(k), int)},
        "latency_ms": {k: lat.get(k) for k in ("p50", "p95", "count")},
        "outbox_blocked": bool(snap.get("outbox_blocked")),
        "last_error": snap.get("last_error") if isinstance(snap.get("last_error"), str)
        else None,
        "last_error_at": snap.get("last_error_at"),
        "camera": {k: cam[k] for k in _CAMERA if k in cam} if cam else None,
        "videos": _videos(snap.get("videos")),
    }


def _videos(raw: object) -> list[dict[str, Any]]:
    """The videos in progress (name, frames done of total, fps, ETA), fields checked."""
    out: list[dict[str, Any]] = []
    for v in raw if isinstance(raw, list) else ():
        if not isinstance(v, dict):
            continue
        out.append({k: v.get(k) for k in _VIDEO
                    if isinstance(v.get(k), (int, float, str)) and not isinstance(v.get(k), bool)})
    return out
