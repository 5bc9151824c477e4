"""The camera's counts and timings, for the state file and `edgeguard status` (no pixel
data). Written by the loop and the still worker, read by the daemon: one lock."""

from __future__ import annotations

import collections
import dataclasses
import statistics
import threading
from typing import Any

STATS_WINDOW = 100  # detection times and frame times over the most recent frames


@dataclasses.dataclass
class _Counts:
    frames: int = 0  # frames taken from the source
    written: int = 0  # redacted frames that reached the outputs
    faces: int = 0  # detections on searched frames (a face in 10 frames counts 10)
    failed: int = 0  # detection/redaction failed or came too late
    blanked: int = 0  # ... and were written black
    dropped: int = 0  # ... and were not written
    missed: int = 0  # frames the source skipped while we were busy
    searched: int = 0  # frames searched (the others covered by the searches around them)
    stills: int = 0
    stills_failed: int = 0
    stills_skipped: int = 0  # asked for while the still worker was busy


class Stats:
    """Counts, the last error, and the recent detection, frame and latency times."""

    def __init__(self) -> None:
        self.counts = _Counts()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._detect_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._frame_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._frame_times: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        # capture -> handed to the video writer, per written frame
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._latency_max_ms = 0.0
        self._views: collections.deque[int] = collections.deque(maxlen=STATS_WINDOW)

    def taken(self, missed: int) -> None:
        """A frame taken from the source, ``missed`` frames after the one before it."""
        with self._lock:
            self.counts.frames += 1
            self.counts.missed += missed

    def handled(self, ms: float, *, searched: bool, views: int | None) -> None:
        """The loop's time on a frame (search and hold), and the views it ran if searched."""
        with self._lock:
            self._frame_ms.append(ms)
            if searched:
                self.counts.searched += 1
                if views is not None:
                    self._views.append(views)

    def written(self, *, faces: int, detect_ms: float | None, now: float,
                captured: float) -> None:
        with self._lock:
            self.counts.written += 1
            self.counts.faces += faces
            if detect_ms is not None:
                self._detect_ms.append(detect_ms)
            self._frame_times.append(now)
            latency = (now - captured) * 1e3
            self._latency_ms.append(latency)
            self._latency_max_ms = max(self._latency_max_ms, latency)

    def failure(self, reason: str, *, blanked: bool) -> None:
        with self._lock:
            self.counts.failed += 1
            if blanked:
                self.counts.blanked += 1
            else:
                self.counts.dropped += 1
            self.last_error = reason

    def still(self, error: str | None = None, *, skipped: bool = False) -> None:
        """A still written (no ``error``), failed, or ``skipped`` (the worker was busy)."""
        with self._lock:
            if skipped:
                self.counts.stills_skipped += 1
            elif error is None:
                self.counts.stills += 1
            else:
                self.counts.stills_failed += 1
                self.last_error = f"still: {error}"

    def snapshot(self) -> dict[str, Any]:
        """The counts and the timing figures, JSON-ready."""
        with self._lock:
            c = dataclasses.asdict(self.counts)
            det = list(self._detect_ms)
            frame = list(self._frame_ms)
            times = list(self._frame_times)
            lat = list(self._latency_ms)
            lat_max = self._latency_max_ms
            views = list(self._views)
            last_error = self.last_error
        fps = None
        if len(times) >= 2 and times[-1] > times[0]:
            fps = round((len(times) - 1) / (times[-1] - times[0]), 2)
        return {
            "fps": fps,
            "detect_ms": round(statistics.fmean(det), 1) if det else None,
            "detect_ms_p95": round(_p95(det), 1) if det else None,
            "frame_ms": round(statistics.fmean(frame), 1) if frame else None,
            "views_per_frame": round(statistics.fmean(views), 1) if views else None,
            "latency_ms": round(statistics.fmean(lat), 1) if lat else None,
            "latency_ms_p95": round(_p95(lat), 1) if lat else None,
            "latency_ms_max": round(lat_max, 1) if lat else None,
            "last_error": last_error,
            **c,
        }


def _p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
