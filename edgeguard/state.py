"""The daemon's counters and the JSON state file `edgeguard status` reads.

The daemon keeps :class:`Stats` in memory (thread-safe) and the supervisor writes a
snapshot to ``<runtime_dir>/state.json`` atomically (temporary name, rename) about once a
second while something changed. The file holds counts, timings and the last error's
text, never image data; with ``hide_filenames`` the error text carries no file name.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeguard.sinks.fileops import replace_file

STATE_FILE = "state.json"
LATENCY_WINDOW = 1000  # the percentiles cover the most recent this many images
RECENT_FAILURES = 50  # the state file names this many recent failures with their reasons


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class _DaemonCounts:
    processed: int = 0
    failed: int = 0
    refused: int = 0
    faces: int = 0  # detections the models are confident of
    weak: int = 0  # regions redacted below that score (privacy first)
    retries: int = 0


class Stats:
    """Counters shared by the workers; snapshots for STATUS= and the state file."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._c = _DaemonCounts()
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        # (inbox-relative name, reason, wall time): what the web page shows per upload.
        self._recent: deque[tuple[str, str, float]] = deque(maxlen=RECENT_FAILURES)
        self.started_mono = clock()
        self.started_wall = wall()
        self.version = 0  # bumped on every change; the supervisor writes when it moves

    def done(self, *, faces: int, latency_s: float, weak: int = 0) -> None:
        with self._lock:
            self._c.processed += 1
            self._c.faces += faces
            self._c.weak += weak
            self._latency.append(latency_s)
            self.version += 1

    def failure(self, shown: str, reason: str, *, refused: bool = False,
                listed: str | None = None) -> None:
        """An item that ended in failed/: ``shown`` is its name as logged (escaped, or
        hidden), ``listed`` its real inbox-relative name for the recent-failures list (None
        when names are to stay out of the state file)."""
        with self._lock:
            if refused:
                self._c.refused += 1
            self._c.failed += 1
            self._last_error = f"{shown}: {reason}"
            self._last_error_at = self._wall()
            if listed is not None:
                self._recent.append((listed, reason, self._last_error_at))
            self.version += 1

    def error(self, reason: str) -> None:
        """An error that did not end an item (the outbox failing, a retry)."""
        with self._lock:
            self._c.retries += 1
            self._last_error = reason
            self._last_error_at = self._wall()
            self.version += 1

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            lat = list(self._latency)
            c = self._c
            snap: dict[str, Any] = {
                "pid": os.getpid(),
                "started_at": self.started_wall,
                "updated_at": self._wall(),
                "uptime_s": round(self._clock() - self.started_mono, 3),
                "processed": c.processed,
                "failed": c.failed,
                "refused": c.refused,
                "faces": c.faces,
                "weak": c.weak,
                "retries": c.retries,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "recent_failures": [{"name": n, "reason": r, "at": at}
                                    for n, r, at in self._recent],
                "latency_ms": {
                    "p50": _ms(percentile(lat, 50)),
                    "p95": _ms(percentile(lat, 95)),
                    "count": len(lat),
                },
            }
        snap.update(extra)
        return snap


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def status_line(snap: dict[str, Any]) -> str:
    """The STATUS= text: short, counts only."""
    text = (f"processed {snap['processed']}, failed {snap['failed']}, faces {snap['faces']} "
            f"(+{snap.get('weak', 0)} weak), "
            f"queued {snap.get('queued', 0)}, in progress {snap.get('in_flight', 0)}")
    if snap.get("outbox_blocked"):
        text += ", outbox not writable (retrying)"
    return text


def write_state(folder: Path, snap: dict[str, Any]) -> None:
    replace_file(folder / STATE_FILE, json.dumps(snap, indent=1, sort_keys=True).encode(),
                 mode=0o644)


def read_state(folder: Path) -> dict[str, Any]:
    """The last snapshot; FileNotFoundError when the daemon never ran here."""
    data: dict[str, Any] = json.loads((folder / STATE_FILE).read_bytes())
    return data
