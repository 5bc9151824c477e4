"""The camera service: capture -> lores detection -> regions on main -> redact -> outputs.

One thread runs the frame loop; a second turns still requests into files, so a 12 MP still
(full multi-scale search on the main frame, redaction, encoding) never stalls the video.

Per frame:

1. detect faces on the ``lores`` frame with the cached interpreters (the profile's full
   search or the whole-frame view alone, ``camera.lores_search``); a lores frame the ISP
   stretched to another aspect ratio is first brought back to main's proportions;
2. scale the boxes to ``main``, pass them through the :class:`~edgeguard.camera.tracker.Tracker`
   (regions persist ``persist_s`` after a face was last seen and follow its motion);
3. redact ``main`` in place (the ``[redact]`` settings, regions from ``region_for``);
4. hand the redacted frame to the video segment writer; if a still is due, a copy of the
   raw main frame (memory only) and the tracker's boxes go to the still worker, which adds
   the full multi-scale search on the main frame before redacting and writing it.

Fail closed: when detection or redaction fails, or the frame is older than
``max_frame_age_s`` when its detection ends (the loop fell behind), the frame is written
black (``failure_policy = "blank"``) or not at all (``"drop"``). The write calls sit after
the redaction on the only path that reaches them: a raw frame is never written. A still
is written only when its own search and redaction succeeded.

Stills are asked for by the interval (``still_interval_s``, in stream time), by
:meth:`CameraService.snap` (the daemon's SIGUSR1 handler calls it: it only bumps a
counter, which is safe in a signal handler) and by the trigger file (polled; removing it
is what claims the request, so one touch gives one still).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import cv2
import numpy as np

from edgeguard import codec, fsutil
from edgeguard.camera import masks, sources, video
from edgeguard.camera.bracket import Bracket, Held
from edgeguard.camera.capture import Capture
from edgeguard.camera.search import FrameSearch
from edgeguard.camera.sources import CameraError, EndOfStream, Frame, Source
from edgeguard.camera.tracker import Tracker
from edgeguard.config import Config
from edgeguard.errors import (
    DetectionError,
    OutputError,
    RedactionError,
    StartupError,
)
from edgeguard.geometry import Box, Detection, Region
from edgeguard.redact import redact, region_for

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5  # the loop wakes at least this often to see stop and triggers
TRIGGER_POLL_S = 0.25
STATS_WINDOW = 100  # detection times and frame times over the most recent frames
STILL_QUEUE = 1  # raw main copies waiting for the still worker (12 MP = 36 MB each)
STOP_WAIT_S = 30.0  # stop() waits this long for the loop and a still in progress
STILL_PREFIX = "cam-"
CAPTURE_QUEUE_S = 1.0  # frames read ahead of the loop: up to this much of the stream ...
CAPTURE_QUEUE_BYTES = 256 * 1024 * 1024  # ... and this much memory (2 frames at least)


class Detector(Protocol):
    """What the loop needs of a detector: RGB uint8 in, detections in its pixels out."""

    def detect(self, rgb: np.ndarray) -> list[Detection]: ...


Find = Callable[[np.ndarray], tuple[list[Detection], list[Region]]]
OnOutput = Callable[[str, Path, int], None]  # (kind "still" | "video", path, frame index)


class _WholeView:
    """The lores frame's whole-frame view alone, through the pipeline's own calls (level 0
    of the frame's plan; no copy of the detector)."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        plan = self._pipe.frame_plan(w, h, min_face=self._pipe.detector.params.plan.min_face)
        return list(self._pipe.search_levels(rgb, plan[:1]))


def lores_detector(pipe: Any, search: str) -> Detector:
    """The lores detector over the pipeline's interpreters (no new interpreter): ``full``
    is the pipeline's own multi-scale detector, ``whole`` its whole-frame view alone."""
    if search == "full":
        return pipe.detector
    if search != "whole":
        raise ValueError(f"lores_search {search!r}: expected full or whole")
    return _WholeView(pipe)


def check_camera(cfg: Config, *, choose: Callable[..., Source | None] = sources.choose) -> str:
    """For `edgeguard check`: which camera ``camera.source`` finds, without opening it.

    Raises StartupError when ``camera.require`` is set and there is none (the same rule
    the daemon applies at start; a camera that is found but cannot be opened only shows
    when the daemon opens it).
    """
    c = cfg.camera
    try:
        spec = sources.parse_spec(c.source)
    except CameraError as exc:
        raise StartupError(str(exc)) from None
    src = choose(spec, main_size=c.main_size, lores_size=c.lores_size, fps=c.fps)
    if src is None:
        if c.require:
            raise StartupError(f"camera.require is set but no camera was found "
                               f"(camera.source = {spec})")
        return f"camera: none (camera.source = {spec}); the inbox runs alone"
    if isinstance(src, sources.FileSource) and not src.path.exists():
        if c.require:
            raise StartupError(f"camera {src.name}: no such file or folder")
        return f"camera {src.name}: no such file or folder; the inbox runs alone"
    return f"camera: {src.name}, main {c.main_size[0]}x{c.main_size[1]}, lores " \
           f"{c.lores_size[0]}x{c.lores_size[1]}"


class _Late(Exception):
    """The frame is older than the age bound after detection (the loop fell behind)."""


@dataclasses.dataclass
class _Counts:
    frames: int = 0  # frames taken from the source
    written: int = 0  # redacted frames that reached the outputs
    faces: int = 0  # detections on lores frames (a face in 10 frames counts 10)
    failed: int = 0  # detection/redaction failed or came too late
    blanked: int = 0  # ... and were written black
    dropped: int = 0  # ... and were not written
    missed: int = 0  # frames the source skipped while we were busy
    searched: int = 0  # frames searched (the others covered by the searches around them)
    stills: int = 0
    stills_failed: int = 0
    stills_skipped: int = 0  # asked for while the still worker was busy


@dataclasses.dataclass
class _Still:
    raw: np.ndarray  # the unredacted main frame: memory only, dropped after use
    cover: list[Box]
    index: int
    wall: float


def still_format(configured: str) -> str:
    """The still's format from ``output.format`` ("same" means JPEG for a camera)."""
    return "jpeg" if configured == "same" else configured


class CameraService:
    """Start, stop, snap and report on the camera; see the module docstring."""

    def __init__(self, cfg: Config, pipe: Any, outbox: Path, *,
                 source: Source | None = None,
                 detector: Detector | None = None,
                 find: Find | None = None,
                 paced: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_output: OnOutput | None = None,
                 choose: Callable[..., Source | None] = sources.choose,
                 writer_factory: Callable[..., Any] | None = None,
                 still_queue: int = STILL_QUEUE) -> None:
        self.cfg = cfg
        self.outbox = Path(outbox)
        self._pipe = pipe
        self._source = source
        self._detector = detector
        self._find = find
        self._paced = paced
        self._clock = clock
        self._wall = wall
        self._on_output = on_output
        self._choose = choose
        self._writer_factory = writer_factory
        c = cfg.camera
        self.spec = sources.parse_spec(c.source)
        self.tracker = Tracker(persist_s=c.persist_s)
        self.state = "off"  # off | running | ended | failed | stopped
        self.last_error: str | None = None
        self.counts = _Counts()
        self._lock = threading.Lock()
        self._detect_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._frame_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._frame_times: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        # capture -> handed to the video writer, per written frame
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=STATS_WINDOW)
        self._latency_max_ms = 0.0
        self._views: collections.deque[int] = collections.deque(maxlen=STATS_WINDOW)
        self._stop = threading.Event()
        self._snap_requests = 0  # bumped by snap() (signal-safe), taken by the loop
        self._snaps_taken = 0
        self._next_interval: float | None = None
        self._interval_pending = False
        self._next_poll = 0.0
        self._trigger_warned = False
        self._last_index: int | None = None
        self._last_shape: tuple[int, ...] | None = None
        self._error_logged: set[str] = set()
        self._writer: video.ThreadedWriter | None = None
        self._loop_thread: threading.Thread | None = None
        self._still_thread: threading.Thread | None = None
        self._stills: queue.Queue[_Still | None] = queue.Queue(maxsize=still_queue)
        self._started = False
        self._closed = False
        self._own_detector = False  # built from the pipeline (so a reload may rebuild it)
        self._frame_search: FrameSearch | None = None
        self._capture: Capture | None = None
        self._bracket = _bracket(c)
        # frames held unsearched since the last search (the first frame is searched)
        self._unsearched = c.search_every

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Find and open the camera, then start the threads.

        With no camera (``none``, or ``auto`` finding none) the service stays ``off`` and the
        inbox runs alone, unless ``camera.require`` is set: then StartupError. A camera that
        is configured but cannot be opened is StartupError with ``require``, else logged
        and reported as ``failed`` in the status.
        """
        if self._started:
            return
        self._started = True
        c = self.cfg.camera
        src = self._source
        if src is None:
            src = self._choose(self.spec, main_size=c.main_size, lores_size=c.lores_size,
                               fps=c.fps, paced=self._paced,
                               max_pixels=self.cfg.input.max_pixels)
        if src is None:
            if c.require:
                raise StartupError(f"camera.require is set but no camera was found "
                                   f"(camera.source = {self.spec})")
            logger.info("camera: off (camera.source = %s)", self.spec)
            return
        try:
            src.open()
        except CameraError as exc:
            if c.require:
                raise StartupError(str(exc)) from None
            self._source = src  # named in the status; closing it again is harmless
            self._fail(f"{exc}; the inbox runs without the camera")
            return
        self._source = src
        try:
            masks.check(c.masks, *src.main_size)
        except ValueError as exc:
            src.close()
            if c.require:
                raise StartupError(f"{self.cfg.source}: {exc}") from None
            self._fail(f"{exc}; the camera does not run without its masks")
            return
        if self._pipe is not None and self._detector is None and self._find is None:
            self._detector = lores_detector(self._pipe, c.lores_search)
            self._find = self._pipe.find
            self._own_detector = True
        elif self._pipe is not None:
            self._detector = self._detector or lores_detector(self._pipe, c.lores_search)
            self._find = self._find or self._pipe.find
        if self._detector is None or self._find is None:
            src.close()
            raise ValueError("CameraService needs a pipeline or a detector and a find")
        # The main-resolution search runs on the pipeline's own detector; an injected
        # lores detector (tests) keeps the lores search.
        if c.search == "main" and self._own_detector and hasattr(self._pipe,
                                                                 "search_levels"):
            self._frame_search = FrameSearch(
                self._pipe, min_face=c.min_face, sweep_frames=c.sweep_frames,
                max_views=c.max_views, motion_threshold=c.motion_threshold)
        self._bracket = _bracket(c)
        w, h = src.main_size
        lw, lh = src.lores_size
        if abs(lw / lh - w / h) > 0.01 * (w / h):
            logger.warning("camera: lores %dx%d has another aspect ratio than main %dx%d; "
                           "it is rescaled before detection (set camera.lores_size to "
                           "main's proportions to save that)", lw, lh, w, h)
        video.remove_stale(self.outbox)
        if c.video:
            self._writer = video.ThreadedWriter(video.SegmentWriter(
                self.outbox, fps=src.fps, size=src.main_size, fmt=c.video_format,
                segment_s=c.segment_s, quota_bytes=c.video_quota_mb * 1024 * 1024,
                wall=self._wall, writer_factory=self._writer_factory,
                on_publish=lambda path: self._emit("video", path, -1)))
        self.state = "running"
        self._still_thread = threading.Thread(target=self._still_worker,
                                              name="edgeguard-camera-stills", daemon=True)
        self._still_thread.start()
        self._loop_thread = threading.Thread(target=self._run, name="edgeguard-camera",
                                             daemon=True)
        self._loop_thread.start()
        search = (f"main-resolution search from {c.min_face:g} px faces, the frame swept "
                  f"every {c.sweep_frames} frames" if self._frame_search is not None else
                  f"detection on lores {lw}x{lh} ({c.lores_search} search)")
        logger.info("camera %s: running; %s, output delayed %d frame(s), policy %s%s%s",
                    src.name, search, c.delay_frames, c.failure_policy,
                    f", video {c.video_format} segments of {c.segment_s:.0f} s"
                    if c.video else "",
                    f", a still every {c.still_interval_s:g} s"
                    if c.still_interval_s > 0 else "")

    def stop(self, timeout: float = STOP_WAIT_S) -> None:
        """Stop capturing, finish the open video segment and pending stills, close the
        camera. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._loop_thread is not None:
            self._loop_thread.join(max(0.0, deadline - time.monotonic()))
            if self._loop_thread.is_alive():
                logger.error("camera: the frame loop did not stop within %.0f s", timeout)
        elif self._source is not None:
            self._source.close()
        if self._still_thread is not None:
            with contextlib.suppress(queue.Full):
                self._stills.put(None, timeout=max(0.1, deadline - time.monotonic()))
            self._still_thread.join(max(0.0, deadline - time.monotonic()))
        if self.state == "running":
            self.state = "stopped"

    def __enter__(self) -> CameraService:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the frame loop to end (a ``file:`` source at its end); tests, benches."""
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)

    @property
    def failed(self) -> bool:
        """The camera was configured but stopped working (the daemon may exit for a restart)."""
        return self.state == "failed"

    def apply(self, cfg: Config, pipe: Any = None) -> None:
        """A reloaded configuration (SIGHUP): ``[redact]`` and ``[output]`` apply from the
        next frame, a new pipeline's detector too; ``[camera]`` changes need a restart and
        are logged and kept as they were."""
        if cfg.camera != self.cfg.camera:
            logger.warning("reload: camera settings need a restart; the camera keeps its "
                           "running settings")
            cfg = dataclasses.replace(cfg, camera=self.cfg.camera)
        self.cfg = cfg
        if pipe is not None and not (hasattr(pipe, "detector") and hasattr(pipe, "find")):
            pipe = None  # a wrapper around the pipeline (a test hook): keep what we have
        if pipe is not None and pipe is not self._pipe:
            self._pipe = pipe
            if self._own_detector:
                self._detector = lores_detector(pipe, cfg.camera.lores_search)
                self._find = pipe.find
                if self._frame_search is not None:
                    self._frame_search.pipe = pipe  # the new [detect] from the next frame
                    self._frame_search.reset()  # its plan is made again

    def snap(self) -> None:
        """Ask for a still of the next frame. Safe to call from a signal handler."""
        self._snap_requests += 1

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts and timings for the state file and `edgeguard status` (no pixel data)."""
        src = self._source
        with self._lock:
            c = dataclasses.asdict(self.counts)
            det = list(self._detect_ms)
            frame = list(self._frame_ms)
            times = list(self._frame_times)
            lat = list(self._latency_ms)
            lat_max = self._latency_max_ms
            views = list(self._views)
        fps = None
        if len(times) >= 2 and times[-1] > times[0]:
            fps = round((len(times) - 1) / (times[-1] - times[0]), 2)
        out: dict[str, Any] = {
            "camera": src.name if src is not None and self.state != "off" else "none",
            "state": self.state,
            "source": str(self.spec),
            "fps": fps,
            "detect_ms": round(statistics.fmean(det), 1) if det else None,
            "detect_ms_p95": round(_p95(det), 1) if det else None,
            "frame_ms": round(statistics.fmean(frame), 1) if frame else None,
            "views_per_frame": round(statistics.fmean(views), 1) if views else None,
            "latency_ms": round(statistics.fmean(lat), 1) if lat else None,
            "latency_ms_p95": round(_p95(lat), 1) if lat else None,
            "latency_ms_max": round(lat_max, 1) if lat else None,
            "policy": self.cfg.camera.failure_policy,
            "masks": [[list(p) for p in poly] for poly in self.cfg.camera.masks],
            "last_error": self.last_error,
            **c,
        }
        if src is not None and self.state != "off":
            out["main_size"] = list(src.main_size)
            out["lores_size"] = list(src.lores_size)
        if self._writer is not None:
            out["video_segments"] = self._writer.segments
            out["video_failures"] = self._writer.failures
        return out

    # -- the frame loop ----------------------------------------------------------------------

    def _run(self) -> None:
        src = self._source
        assert src is not None
        w, h = src.main_size
        depth = max(2, min(round(src.fps * CAPTURE_QUEUE_S),
                           CAPTURE_QUEUE_BYTES // max(1, w * h * 3)))
        capture = self._capture = Capture(src, depth=depth, timeout=READ_TIMEOUT_S,
                                          block=not self._paced)
        capture.start()
        try:
            while not self._stop.is_set():
                try:
                    frame = capture.get(READ_TIMEOUT_S)
                except EndOfStream:
                    logger.info("camera %s: end of the file", src.name)
                    self._search_held_in_full()
                    self._drain()
                    if self._writer is not None:
                        self._writer.close()  # the last segment counts before "ended" shows
                    self.state = "ended"
                    break
                except CameraError as exc:
                    self._fail(str(exc))
                    break
                except Exception as exc:  # a bug in a source: report it, never die silently
                    logger.exception("camera: internal error reading a frame")
                    self._fail(f"internal error: {type(exc).__name__}: {exc}")
                    break
                self._poll_trigger()
                if frame is not None:
                    self._frame(frame)
        finally:
            try:
                capture.stop()
                self._search_held_in_full()
                self._drain()  # frames held by the bracket are written, not lost
                if self._writer is not None:
                    self._writer.close()  # publishes the open segment
            finally:
                src.close()

    def _frame(self, frame: Frame) -> None:
        """One frame, one error boundary: search it, hold it in the bracket, and write the
        frames the bracket releases. Whatever fails, no raw pixel is written."""
        c = self.cfg.camera
        t_start = self._clock()
        with self._lock:
            self.counts.frames += 1
            if self._last_index is not None and frame.index > self._last_index + 1:
                self.counts.missed += frame.index - self._last_index - 1
        self._last_index = frame.index
        shape = frame.main.shape
        if frame.still or (self._last_shape is not None and shape != self._last_shape):
            # Another picture (an image of a folder): nothing found in one carries over to
            # the next, in either direction.
            self._search_held_in_full()
            self._drain()
            self.tracker.reset()
            if self._frame_search is not None:
                self._frame_search.reset()
            self._unsearched = c.search_every  # the next frame is searched
        self._last_shape = shape
        held = Held(frame, frame.t, searched=frame.still or self._search_now())
        try:
            boxes: list[Box] = []
            if held.searched:
                self._unsearched = 0
                t0 = self._clock()
                boxes = self._search(frame)
                held.detect_ms = (self._clock() - t0) * 1e3
            else:
                self._unsearched += 1
            age = self._clock() - frame.captured
            if age > c.max_frame_age_s:
                raise _Late(f"frame {age:.2f} s old after detection (bound "
                            f"{c.max_frame_age_s:g} s)")
            if frame.still:  # searched in full, written at once: no tracker, no bracket
                held.cover = boxes
                held.found = [(-1 - i, b, 0.0, 0.0) for i, b in enumerate(boxes)]
            elif held.searched:
                held.cover = self.tracker.update(frame.t, boxes)
                held.found = self.tracker.found_at(frame.t)
            else:
                # The searches before it (moved and grown to this time); the bracket adds
                # the faces the searches after it find.
                held.cover = self.tracker.cover(frame.t)
        except (DetectionError, RedactionError, _Late) as exc:
            held.error = str(exc)
        except Exception as exc:  # the per-frame boundary: a bug fails the frame, closed
            if type(exc).__name__ not in self._error_logged:
                self._error_logged.add(type(exc).__name__)
                logger.exception("camera: internal error on a frame")
            held.error = f"internal error: {type(exc).__name__}: {exc}"
        if frame.still:
            self._release(held, held.cover)
        else:
            for ready, cover in self._bracket.push(held):
                self._release(ready, cover)
        with self._lock:
            self._frame_ms.append((self._clock() - t_start) * 1e3)
            if held.searched:
                self.counts.searched += 1
                if self._frame_search is not None:
                    self._views.append(self._frame_search.stats.views)

    def _search_now(self) -> bool:
        """Whether this frame is searched: at most every ``search_every`` frames, and not
        while frames wait behind it in a live camera's queue (the search takes the newest
        frame when it is free; the frames before it are covered by the searches around
        them, so every frame is written at the camera's rate). A frame is searched at
        least once a second of frames whatever the queue (an unpaced file fills the queue
        by design: it is never behind)."""
        c = self.cfg.camera
        if self._unsearched + 1 < c.search_every:
            return False
        behind = self._paced and self._capture is not None and self._capture.queued > 0
        return not behind or self._unsearched + 1 >= max(c.search_every, round(c.fps))

    def _search_held_in_full(self) -> None:
        """At the end of a file (or a stop) no later frames will bracket the held ones: the
        newest gets the full search of its main frame, and what it finds is carried back
        over the others like any later detection (a face that walked in during the last
        ``delay_frames`` frames may not have been swept yet). One full search, not one per
        held frame, so the last frames wait ~0.2 s more, not seconds."""
        held = self._bracket.held()
        if self._frame_search is None or not held or held[-1].error is not None:
            return
        last = held[-1]
        try:
            boxes = self._frame_search.full(last.frame.main)
        except (DetectionError, ValueError, MemoryError) as exc:
            last.error = f"detection failed: {exc}"
            return
        last.cover.extend(boxes)
        # ids no track uses (tracks count up from 1); no velocity: carried back grown
        last.found.extend((-1 - i, b, 0.0, 0.0) for i, b in enumerate(boxes))

    def _drain(self) -> None:
        """Write the frames the bracket still holds (end of the stream, stop)."""
        for ready, cover in self._bracket.drain():
            self._release(ready, cover)

    def _release(self, held: Held, cover: list[Box]) -> None:
        """Redact and write one frame the bracket released."""
        frame = held.frame
        # Stills are decided here, on the frame being written (a snap gets the frame
        # written next, captured up to the bracket's delay before it was asked for).
        want_still = self._still_due(frame.t)
        if held.error is not None:
            self._failure(frame, held.error)
            return
        raw: np.ndarray | None = None
        try:
            if want_still:
                raw = frame.main.copy()
            self._redact(frame.main, cover)
            self._mask(frame.main)
        except RedactionError as exc:
            self._failure(frame, str(exc))
            return
        except Exception as exc:  # the per-frame boundary, as in _frame
            if type(exc).__name__ not in self._error_logged:
                self._error_logged.add(type(exc).__name__)
                logger.exception("camera: internal error redacting a frame")
            self._failure(frame, f"internal error: {type(exc).__name__}: {exc}")
            return
        # Only a redacted frame reaches this point.
        if self._writer is not None:
            self._writer.write(frame.main, frame.t)
        if raw is not None:
            self._queue_still(_Still(raw, cover, frame.index, self._wall()))
            self._snaps_taken_commit()
        with self._lock:
            self.counts.written += 1
            self.counts.faces += len(held.found)
            if held.searched:
                self._detect_ms.append(held.detect_ms)
            now = self._clock()
            self._frame_times.append(now)
            latency = (now - frame.captured) * 1e3
            self._latency_ms.append(latency)
            self._latency_max_ms = max(self._latency_max_ms, latency)

    def _search(self, frame: Frame) -> list[Box]:
        """This frame's faces in main pixels: the main-resolution search, or the lores
        search alone (``camera.search``)."""
        if self._frame_search is None:
            return self._detect(frame)
        try:
            if frame.still:
                return self._frame_search.full(frame.main)
            return self._frame_search(frame.main, frame.lores, self.tracker.cover(frame.t))
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc

    def _detect(self, frame: Frame) -> list[Box]:
        """Faces on the lores frame, as boxes in main pixels."""
        assert self._detector is not None
        main_h, main_w = frame.main.shape[:2]
        lores = frame.lores
        h, w = lores.shape[:2]
        # Undo an ISP stretch (lores of another aspect ratio): faces keep their proportions.
        true_w = round(h * main_w / main_h)
        if abs(true_w - w) > 1:
            lores = cv2.resize(lores, (true_w, h), interpolation=cv2.INTER_LINEAR)
            w = true_w
        try:
            dets = self._detector.detect(lores)
        except (ValueError, MemoryError) as exc:
            raise DetectionError(f"detection failed: {exc}") from exc
        sx, sy = main_w / w, main_h / h
        return [Box(d.box.x1 * sx, d.box.y1 * sy, d.box.x2 * sx, d.box.y2 * sy) for d in dets]

    def _redact(self, rgb: np.ndarray, boxes: Sequence[Box],
                extra: Sequence[Region] = ()) -> None:
        """Face boxes (expanded by ``[redact]``) and exact regions, through the pipeline
        when there is one (the regions are made in one place)."""
        pipe = self._pipe
        if pipe is not None and hasattr(pipe, "redact_boxes") \
                and pipe.cfg.redact == self.cfg.redact:
            pipe.redact_boxes(rgb, boxes, extra)
            return
        h, w = rgb.shape[:2]
        rc = self.cfg.redact
        regions = [r for r in (region_for(b, expand=rc.expand, width=w, height=h)
                               for b in boxes) if r is not None]
        redact(rgb, [*regions, *extra], mode=rc.mode, shape=rc.shape, color=rc.color,
               outline=rc.outline)

    def _mask(self, rgb: np.ndarray) -> None:
        """The privacy masks (``camera.masks``), over whatever the search found."""
        if self.cfg.camera.masks:
            rc = self.cfg.redact
            masks.apply(rgb, self.cfg.camera.masks, mode=rc.mode, color=rc.color)

    def _failure(self, frame: Frame, reason: str) -> None:
        policy = self.cfg.camera.failure_policy
        with self._lock:
            self.counts.failed += 1
            if policy == "blank":
                self.counts.blanked += 1
            else:
                self.counts.dropped += 1
            self.last_error = reason
        if reason not in self._error_logged:
            self._error_logged.add(reason)
            logger.warning("camera: frame %d %s: %s", frame.index,
                           "blanked" if policy == "blank" else "dropped", reason)
        if policy == "blank" and self._writer is not None:
            self._writer.blank(frame.t)
        # The raw frame goes with the Frame object: nothing else holds it.

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.last_error = reason
        logger.error("camera: %s", reason)

    # -- stills ------------------------------------------------------------------------------

    def _poll_trigger(self) -> None:
        path = self.cfg.camera.trigger_file
        if not path:
            return
        now = self._clock()
        if now < self._next_poll:
            return
        self._next_poll = now + TRIGGER_POLL_S
        try:
            os.unlink(path)  # removing it claims the request: one touch, one still
        except FileNotFoundError:
            return
        except OSError as exc:
            if not self._trigger_warned:
                self._trigger_warned = True
                logger.warning("camera: trigger file %s cannot be removed (%s); ignored",
                               path, exc.strerror)
            return
        self.snap()

    def _still_due(self, t: float) -> bool:
        """Whether this frame should also become a still. A request stays pending until a
        frame is redacted successfully (a failed frame gives no still)."""
        interval = self.cfg.camera.still_interval_s
        if interval > 0:
            if self._next_interval is None:
                self._next_interval = t + interval
            elif t >= self._next_interval:
                self._interval_pending = True
                # Stay on the grid; after a long gap start again from now.
                self._next_interval += interval
                if self._next_interval <= t:
                    self._next_interval = t + interval
        return self._interval_pending or self._snap_requests != self._snaps_taken

    def _snaps_taken_commit(self) -> None:
        self._snaps_taken = self._snap_requests
        self._interval_pending = False

    def _queue_still(self, item: _Still) -> None:
        try:
            self._stills.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.counts.stills_skipped += 1
            logger.warning("camera: still skipped: the previous one is still being processed")

    def _still_worker(self) -> None:
        while True:
            item = self._stills.get()
            if item is None:
                return
            try:
                path = self._write_still(item)
            except (DetectionError, RedactionError, OutputError, ValueError) as exc:
                with self._lock:
                    self.counts.stills_failed += 1
                    self.last_error = f"still: {exc}"
                logger.warning("camera: still of frame %d not written: %s", item.index, exc)
            except Exception as exc:  # the per-still boundary
                with self._lock:
                    self.counts.stills_failed += 1
                    self.last_error = f"still: internal error: {type(exc).__name__}"
                logger.exception("camera: internal error on a still")
            else:
                with self._lock:
                    self.counts.stills += 1
                self._emit("still", path, item.index)
            finally:
                del item

    def _write_still(self, item: _Still) -> Path:
        """The full search on the raw main frame, plus the tracker's boxes, redacted,
        encoded without metadata and published atomically."""
        assert self._find is not None
        t0 = time.perf_counter()
        _, found = self._find(item.raw)
        t1 = time.perf_counter()
        self._redact(item.raw, item.cover, found)
        self._mask(item.raw)
        fmt = still_format(self.cfg.output.format)
        # consume: the still's frame is not used again (no second 36 MB copy at 12 MP)
        data = codec.encode(item.raw, fmt, quality=self.cfg.output.jpeg_quality, consume=True)
        t2 = time.perf_counter()
        when = datetime.fromtimestamp(item.wall)
        stem = f"{STILL_PREFIX}{when:%Y%m%d-%H%M%S}-{when.microsecond // 1000:03d}"
        path = fsutil.write_unique(self.outbox, stem, codec.suffix_for(fmt), data)
        logger.info("camera: still %s: %d region(s) from the full search, %d tracked; "
                    "search %.0f ms, redact+encode %.0f ms", path.name, len(found),
                    len(item.cover), (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        return path

    def _emit(self, kind: str, path: Path, index: int) -> None:
        if self._on_output is not None:
            self._on_output(kind, path, index)


def _bracket(c: Any) -> Bracket:
    """The bracket for ``camera`` settings ``c``: it holds ``delay_frames`` searched frames
    and the unsearched ones between them, at most 2 s of frames beyond that (memory)."""
    return Bracket(c.delay_frames,
                   max_held=(c.delay_frames + 1) * c.search_every + round(2 * c.fps))


def _p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
