"""The camera service: start, stop, snap, reload and report on the camera.

Three parts, each in its module: :class:`~edgeguard.camera.frames.FramePath` takes each
frame through the search, the tracker, the bracket and the redaction to the video writer
(on the loop thread, which this module runs); :class:`~edgeguard.camera.stills.Stills`
decides when a still is due and writes it on its own thread;
:class:`~edgeguard.camera.stats.Stats` keeps the counts and timings for the status.

The constructor takes the configuration, the pipeline (its interpreters and its calls for
the camera), where the outputs go (:class:`Sinks`, or just the outbox) and, for tests and
benchmarks, the rest of the world (:class:`World`: clocks, the camera chooser, pacing, a
detector that replaces the main search). ``source`` gives an opened-by-us source instead
of choosing one from ``camera.source``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeguard.camera import masks, sources, video
from edgeguard.camera.capture import Capture
from edgeguard.camera.frames import Detector, FramePath, lores_detector
from edgeguard.camera.search import FrameSearch
from edgeguard.camera.sources import CameraError, EndOfStream, Source
from edgeguard.camera.stats import Stats
from edgeguard.camera.stills import OnOutput, Stills
from edgeguard.config import Config
from edgeguard.errors import StartupError

logger = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5  # the loop wakes at least this often to see stop and triggers
STILL_QUEUE = 1  # raw main copies waiting for the still worker (12 MP = 36 MB each)
STOP_WAIT_S = 30.0  # stop() waits this long for the loop and a still in progress
CAPTURE_QUEUE_S = 1.0  # frames read ahead of the loop: up to this much of the stream ...
CAPTURE_QUEUE_BYTES = 256 * 1024 * 1024  # ... and this much memory (2 frames at least)


@dataclasses.dataclass(frozen=True)
class Sinks:
    """Where the camera's outputs go: the outbox, a callback per published file, the
    video container writer (tests give a fake) and the stills waiting at most."""

    outbox: Path
    on_output: OnOutput | None = None
    writer_factory: Callable[..., Any] | None = None
    still_queue: int = STILL_QUEUE


@dataclasses.dataclass(frozen=True)
class World:
    """What the service takes from outside, with real defaults: ``paced`` (a ``file:``
    source plays at its frame rate, like a camera), the clocks, the camera chooser, and a
    ``detector`` that replaces the main-resolution search with a lores one (tests)."""

    paced: bool = True
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    choose: Callable[..., Source | None] = sources.choose
    detector: Detector | None = None


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


class CameraService:
    """Start, stop, snap and report on the camera; see the module docstring."""

    def __init__(self, cfg: Config, pipe: Any, sinks: Sinks | Path, *,
                 source: Source | None = None, world: World = World()) -> None:
        self.cfg = cfg
        self.sinks = sinks if isinstance(sinks, Sinks) else Sinks(Path(sinks))
        self.outbox = self.sinks.outbox
        self._pipe = pipe
        self._source = source
        self.world = world
        self.spec = sources.parse_spec(cfg.camera.source)
        self.state = "off"  # off | running | ended | failed | stopped
        self.stats = Stats()
        self._stop = threading.Event()
        self._path: FramePath | None = None
        self._stills: Stills | None = None
        self._writer: video.ThreadedWriter | None = None
        self._capture: Capture | None = None
        self._loop_thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._snaps_early = 0  # snap() before start: handed to the stills at start

    @property
    def last_error(self) -> str | None:
        return self.stats.last_error

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
        src = self._open()
        if src is None:
            return
        c = self.cfg.camera
        w, h = src.main_size
        lw, lh = src.lores_size
        if abs(lw / lh - w / h) > 0.01 * (w / h):
            logger.warning("camera: lores %dx%d has another aspect ratio than main %dx%d; "
                           "it is rescaled before detection (set camera.lores_size to "
                           "main's proportions to save that)", lw, lh, w, h)
        if c.video:
            self._writer = video.ThreadedWriter(video.SegmentWriter(
                self.outbox, fps=src.fps, size=src.main_size, fmt=c.video_format,
                segment_s=c.segment_s, quota_bytes=c.video_quota_mb * 1024 * 1024,
                wall=self.world.wall, writer_factory=self.sinks.writer_factory,
                on_publish=self._on_video))
        self._path = self._frame_path(src)
        self.state = "running"
        assert self._stills is not None
        self._stills.start()
        self._loop_thread = threading.Thread(target=self._run, name="edgeguard-camera",
                                             daemon=True)
        self._loop_thread.start()
        search = (f"main-resolution search from {c.min_face:g} px faces, the frame swept "
                  f"every {c.sweep_frames} searched frames, searched every "
                  f"{c.search_every} frame(s) at most" if self._path.frame_search else
                  f"detection on lores {lw}x{lh} ({c.lores_search} search)")
        logger.info("camera %s: running; %s, output delayed %d searched frame(s), policy "
                    "%s%s%s", src.name, search, c.delay_frames, c.failure_policy,
                    f", video {c.video_format} segments of {c.segment_s:.0f} s"
                    if c.video else "",
                    f", a still every {c.still_interval_s:g} s"
                    if c.still_interval_s > 0 else "")

    def _open(self) -> Source | None:
        """The camera, opened and its masks checked; None when there is none to run."""
        c = self.cfg.camera
        src = self._source
        if src is None:
            src = self.world.choose(self.spec, main_size=c.main_size, lores_size=c.lores_size,
                                    fps=c.fps, paced=self.world.paced,
                                    max_pixels=self.cfg.input.max_pixels)
        if src is None:
            if c.require:
                raise StartupError(f"camera.require is set but no camera was found "
                                   f"(camera.source = {self.spec})")
            logger.info("camera: off (camera.source = %s)", self.spec)
            return None
        self._source = src  # named in the status, even when it fails
        try:
            src.open()
        except CameraError as exc:
            if c.require:
                raise StartupError(str(exc)) from None
            self._fail(f"{exc}; the inbox runs without the camera")
            return None
        try:
            masks.check(c.masks, *src.main_size)
        except ValueError as exc:
            src.close()
            if c.require:
                raise StartupError(f"{self.cfg.source}: {exc}") from None
            self._fail(f"{self.cfg.source}: {exc}; the camera does not run without its masks")
            return None
        if self._pipe is None and self.world.detector is None:
            src.close()
            raise ValueError("CameraService needs a pipeline or a detector")
        return src

    def _frame_path(self, src: Source) -> FramePath:
        c = self.cfg.camera
        detector = self.world.detector or lores_detector(self._pipe, c.lores_search)
        # The main-resolution search runs on the pipeline's own detector; an injected
        # lores detector (tests) keeps the lores search.
        frame_search = None
        if c.search == "main" and self.world.detector is None \
                and hasattr(self._pipe, "search_levels"):
            frame_search = FrameSearch(
                self._pipe, min_face=c.min_face, sweep_frames=c.sweep_frames,
                max_views=c.max_views, motion_threshold=c.motion_threshold)
        path = FramePath(self.cfg, self._pipe, detector, frame_search=frame_search,
                         writer=self._writer, stats=self.stats, behind=self._behind,
                         clock=self.world.clock)
        self._stills = Stills(self.outbox, path, self.stats, depth=self.sinks.still_queue,
                              clock=self.world.clock, wall=self.world.wall,
                              on_output=self.sinks.on_output)
        for _ in range(self._snaps_early):
            self._stills.snap()
        path.stills = self._stills
        return path

    def _behind(self) -> bool:
        """Frames wait behind the current one in a live camera's queue (an unpaced file
        fills the queue by design: it is never behind)."""
        return self.world.paced and self._capture is not None and self._capture.queued > 0

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
        if self._stills is not None:
            self._stills.stop(deadline)
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
        if pipe is not None:
            self._pipe = pipe
        if self._path is not None:
            self._path.reload(cfg, pipe, own_detector=self.world.detector is None)

    def snap(self) -> None:
        """Ask for a still of the next frame. Safe to call from a signal handler."""
        if self._stills is not None:
            self._stills.snap()
        else:
            self._snaps_early += 1

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Counts and timings for the state file and `edgeguard status` (no pixel data)."""
        src = self._source
        out: dict[str, Any] = {
            "camera": src.name if src is not None and self.state != "off" else "none",
            "state": self.state,
            "source": str(self.spec),
            "policy": self.cfg.camera.failure_policy,
            "masks": [[list(p) for p in poly] for poly in self.cfg.camera.masks],
            **self.stats.snapshot(),
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
        src, path, stills = self._source, self._path, self._stills
        assert src is not None and path is not None and stills is not None
        w, h = src.main_size
        depth = max(2, min(round(src.fps * CAPTURE_QUEUE_S),
                           CAPTURE_QUEUE_BYTES // max(1, w * h * 3)))
        capture = self._capture = Capture(src, depth=depth, timeout=READ_TIMEOUT_S,
                                          block=not self.world.paced)
        capture.start()
        try:
            while not self._stop.is_set():
                try:
                    frame = capture.get(READ_TIMEOUT_S)
                except EndOfStream:
                    logger.info("camera %s: end of the file", src.name)
                    path.finish()
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
                stills.poll_trigger()
                if frame is not None:
                    path(frame)
        finally:
            try:
                capture.stop()
                path.finish()  # frames held by the bracket are written, not lost
                if self._writer is not None:
                    self._writer.close()  # publishes the open segment
            finally:
                src.close()

    def _on_video(self, path: Path) -> None:
        if self.sinks.on_output is not None:
            self.sinks.on_output("video", path, -1)

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.stats.last_error = reason
        logger.error("camera: %s", reason)
