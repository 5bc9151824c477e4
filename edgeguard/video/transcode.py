"""Redact a video file into another, frame by frame, with PyAV (FFmpeg).

One pass over the input's packets:

- video packets are decoded one frame at a time (never the whole video in memory: at most
  ``hold_frames + 1`` decoded frames plus the codecs' own buffers), turned upright (the
  display matrix's rotation applied to the pixels), searched with the file pipeline's
  :meth:`~edgeguard.pipeline.Pipeline.find` (every frame, the full file search), held back
  ``hold_frames`` frames by :class:`~edgeguard.video.hold.Hold`, redacted and re-encoded
  as H.264 (libx264, ``video.quality`` as its constant rate factor) with the input's own
  timestamps, so frame count, frame rate (constant or variable) and duration are the
  input's;
- the first audio stream's packets are copied into the output unchanged (no re-encoding,
  so no loss and no drift), or dropped with ``output.video_audio = "drop"``;
- everything else is left behind: other video, audio, subtitle and data streams (GoPro
  GPS telemetry, Apple's timed metadata), chapters, attachments, the container's and the
  streams' metadata (location, make and model, creation time) except the keys in
  ``video.keep_metadata``, and the display matrix (the pixels are already upright).

Errors reading or decoding the input are :class:`~edgeguard.errors.DecodeError` (so is a
frame FFmpeg flags as corrupt, and a stream that ends before the frame count its header
gives); errors writing the output are OSError (the caller's outbox turns that into a retry)
or :class:`~edgeguard.errors.EncodeError` (a ``RedactionError``). The caller removes the
partial output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from edgeguard.config import Config
from edgeguard.errors import DecodeError, EncodeError, ImageTooLargeError
from edgeguard.geometry import Detection, Region
from edgeguard.redact import redact, region_for
from edgeguard.video.hold import Hold
from edgeguard.video.probe import OUTPUT, Probe, av_module, check_limits, open_input, probe
from edgeguard.video.probe import short_error as _short

logger = logging.getLogger(__name__)

# Audio packets held while no video frame has been decoded yet (a second of audio is ~50).
MAX_AUDIO_BEFORE_VIDEO = 2000

Progress = Callable[[int, "int | None"], None]
"""Called after each frame written with (frames done, frames expected or None); may raise
to cancel (the caller then removes the partial output)."""


class FrameFinder(Protocol):
    """What a video needs from the pipeline: its config and the per-frame file search."""

    cfg: Config

    def find(self, rgb: np.ndarray) -> tuple[list[Detection], list[Region]]: ...


@dataclass(frozen=True)
class VideoResult:
    """What redacting one video did."""

    probe: Probe
    frames: int
    faces: int  # detections summed over frames (a face in 30 frames counts 30)
    face_frames: int  # frames with at least one region redacted (detected or held)
    audio_packets: int
    rotation: int  # degrees clockwise applied to the pixels (from the display matrix)
    timings_s: dict[str, float] = field(default_factory=dict)


def _no_progress(done: int, total: int | None) -> None:
    return None


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return rgb
    return np.ascontiguousarray(np.rot90(rgb, k={90: -1, 180: 2, 270: 1}[rotation]))


def _even(rgb: np.ndarray) -> np.ndarray:
    """4:2:0 H.264 needs even sizes: an odd last row/column is repeated once (it is the
    redacted frame's own edge, so a covered face stays covered)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _Writer:
    """The output container: an H.264 stream and, optionally, the copied audio stream."""

    def __init__(self, av: Any, dst: Path | IO[bytes], *, p: Probe, size: tuple[int, int],
                 vin: Any, ain: Any | None, cfg: Config, metadata: dict[str, str]) -> None:
        self._av = av
        fmt = OUTPUT[p.container][0]
        self.container = av.open(str(dst) if isinstance(dst, Path) else dst, mode="w",
                                 format=fmt)
        w, h = size
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        v = self.container.add_stream("libx264", rate=rate)
        v.width, v.height = w + w % 2, h + h % 2
        v.pix_fmt = "yuv420p"
        v.time_base = vin.time_base
        v.codec_context.time_base = vin.time_base
        # Memory over compression (benchmarks/video.py: peak RSS on 1080p): one encoder
        # thread per core, a 5-frame rate-control lookahead and one B-frame instead of
        # veryfast's 3 threads, 10 frames and 3 B-frames. AVI has no presentation
        # timestamps, so no B-frames (no reordering) there.
        bframes = 0 if fmt == "avi" else 1
        v.codec_context.options = {
            "crf": str(cfg.video.quality), "preset": cfg.video.preset,
            "x264-params": f"threads=2:rc-lookahead=5:bframes={bframes}"}
        self.video = v
        self.audio = self.container.add_stream_from_template(ain) if ain is not None else None
        self.container.metadata.update(metadata)
        self.tb = vin.time_base

    def frame(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        vf = self._av.VideoFrame.from_ndarray(_even(rgb), format="rgb24")
        vf.pts = pts
        vf.duration = duration
        vf.time_base = self.tb
        self._mux(self.video.encode(vf))

    def packet(self, packet: Any) -> None:
        assert self.audio is not None
        packet.stream = self.audio
        self._mux([packet])

    def finish(self) -> None:
        self._mux(self.video.encode(None))
        self.container.close()

    def _mux(self, packets: Any) -> None:
        for pkt in packets:
            self.container.mux(pkt)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception as exc:  # closing after a failure: the file is removed anyway
            logger.debug("closing a failed output: %s", exc)


def redact_video(src: Path, dst: Path | IO[bytes], *, kind: str, search: FrameFinder,
                 progress: Progress = _no_progress,
                 clock: Callable[[], float] = time.perf_counter) -> VideoResult:
    """Write the redacted copy of the video at ``src`` (container ``kind``, as sniffed) to
    ``dst`` (a path, or a seekable file open for writing). Raises before writing anything
    when the header breaks a limit."""
    av = av_module()
    cfg = search.cfg
    t0 = clock()
    inp = open_input(src)
    run: _Run | None = None
    try:
        p = probe(inp, kind)
        check_limits(p, cfg.video)
        vin = next(s for s in inp.streams.video if s.codec_context.width == p.width)
        # One decoding thread: a 1080p H.264 stream decodes far faster than it is searched,
        # and frame threads would hold a pool of extra frames per thread.
        vin.codec_context.thread_count = 1
        ain = (inp.streams.audio[0] if inp.streams.audio and cfg.output.video_audio == "copy"
               else None)
        keep = {k: v for k, v in inp.metadata.items() if k in cfg.video.keep_metadata}

        def writer(size: tuple[int, int]) -> _Writer:
            try:
                return _Writer(av, dst, p=p, size=size, vin=vin, ain=ain, cfg=cfg,
                               metadata=keep)
            except av.FFmpegError as exc:
                if isinstance(exc, OSError):
                    raise
                raise EncodeError(f"cannot start the video encoder: {_short(exc)}") from None

        run = _Run(av, p, cfg, search, writer, vin, progress)
        streams = [vin] + ([ain] if ain is not None else [])
        try:
            for packet in inp.demux(*streams):
                if ain is not None and packet.stream_index == ain.index:
                    if packet.size:
                        run.audio(packet)
                else:
                    run.video(packet)
        except av.FFmpegError as exc:
            if isinstance(exc, OSError) and run.writing:
                raise
            raise DecodeError(f"video data unreadable after frame {run.decoded}: "
                              f"{_short(exc)}") from None
        run.end()
        return VideoResult(p, run.written, run.faces, run.face_frames, run.audio_packets,
                           run.rotation, {"total": clock() - t0, "search": run.search_s})
    finally:
        if run is not None and run.writer is not None:
            run.writer.close()
        inp.close()


class _Run:
    """The state of one pass: decoded and written counts, the hold, the timestamps."""

    def __init__(self, av: Any, p: Probe, cfg: Config, search: FrameFinder,
                 make_writer: Callable[[tuple[int, int]], _Writer], vin: Any,
                 progress: Progress) -> None:
        self.av = av
        self.p = p
        self.cfg = cfg
        self.search = search
        # The writer is made at the first frame, whose display matrix gives the rotation
        # (PyAV shows it on frames, not streams); audio that comes first waits for it.
        self.make_writer = make_writer
        self.writer: _Writer | None = None
        self.rotation = 0
        self._audio_waiting: list[Any] = []
        self.tb = Fraction(vin.time_base)
        self.progress = progress
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        self.frame_ticks = max(1, round(1 / (Fraction(rate) * self.tb)))  # one frame in tb
        self.hold: Hold[tuple[np.ndarray, int, int]] = Hold(
            frames=cfg.video.hold_frames, frame_s=float(self.frame_ticks * self.tb))
        self.decoded = 0
        self.written = 0
        self.faces = 0
        self.face_frames = 0
        self.audio_packets = 0
        self.search_s = 0.0
        self.writing = False  # True while in the encoder or muxer (OSError: the outbox)
        self._last_pts: int | None = None
        self._prev: tuple[np.ndarray, int, int, list[Any]] | None = None

    def audio(self, packet: Any) -> None:
        if self.writer is None:
            if len(self._audio_waiting) >= MAX_AUDIO_BEFORE_VIDEO:
                raise DecodeError(f"no video frame among the first {MAX_AUDIO_BEFORE_VIDEO} "
                                  "audio packets")
            self._audio_waiting.append(packet)
            return
        self.writing = True
        self.writer.packet(packet)
        self.writing = False
        self.audio_packets += 1

    def _start(self, frame: Any) -> _Writer:
        raw = frame.rotation or 0
        self.rotation = round(-float(raw) / 90.0) % 4 * 90  # clockwise, as displayed
        w, h = self.p.width, self.p.height
        self.writing = True
        writer = self.make_writer((h, w) if self.rotation in (90, 270) else (w, h))
        self.writer = writer
        waiting, self._audio_waiting = self._audio_waiting, []
        self.writing = False
        for packet in waiting:
            self.audio(packet)
        return writer

    def video(self, packet: Any) -> None:
        for frame in packet.decode():
            self._frame(frame)

    def _frame(self, frame: Any) -> None:
        n = self.decoded
        self.decoded += 1
        if frame.is_corrupt:
            raise DecodeError(f"corrupt video data in frame {n + 1}")
        if (frame.width, frame.height) != (self.p.width, self.p.height):
            raise DecodeError(f"frame {n + 1} is {frame.width}x{frame.height}, not the "
                              f"{self.p.width}x{self.p.height} of the header")
        limits = self.cfg.video
        if self.decoded * self.p.pixels > limits.max_total_pixels:
            raise ImageTooLargeError(
                f"video has more frames than video.max_total_pixels allows ({self.decoded} "
                "decoded; the header claimed fewer)")
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self.frame_ticks
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # the encoder needs rising timestamps
        self._last_pts = pts
        t = float(pts * self.tb)
        if t > limits.max_seconds:
            raise ImageTooLargeError(f"video runs past video.max_seconds "
                                     f"({limits.max_seconds:.0f} s) at frame {n + 1}")
        if self.writer is None:
            self._start(frame)
        rgb = _upright(frame.to_ndarray(format="rgb24"), self.rotation)
        s0 = time.perf_counter()
        dets, _ = self.search.find(rgb)
        self.search_s += time.perf_counter() - s0
        self.faces += len(dets)
        item = (rgb, pts, int(frame.duration or 0))
        for ready, boxes in self.hold.push(item, t, [d.box for d in dets]):
            self._emit(ready, boxes)

    def _emit(self, item: tuple[np.ndarray, int, int], boxes: list[Any]) -> None:
        # Written one frame late: a frame without its own duration lasts until the next.
        if self._prev is not None:
            prev_rgb, prev_pts, prev_dur, prev_boxes = self._prev
            self._write(prev_rgb, prev_pts, prev_dur or max(1, item[1] - prev_pts),
                        prev_boxes)
        self._prev = (*item, boxes)

    def _write(self, rgb: np.ndarray, pts: int, duration: int, boxes: list[Any]) -> None:
        h, w = rgb.shape[:2]
        rc = self.cfg.redact
        regions = [r for b in boxes
                   if (r := region_for(b, expand=rc.expand, width=w, height=h)) is not None]
        if regions:
            redact(rgb, regions, mode=rc.mode, shape=rc.shape, color=rc.color,
                   outline=rc.outline)
            self.face_frames += 1
        assert self.writer is not None
        self.writing = True
        try:
            self.writer.frame(rgb, pts, duration)
        except self.av.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise
            raise EncodeError(f"video encoding failed at frame {self.written + 1}: "
                              f"{_short(exc)}") from None
        self.writing = False
        self.written += 1
        self.progress(self.written, self.p.frames)

    def end(self) -> None:
        # (The demuxer's final empty packet per stream has already drained the decoder.)
        for item, boxes in self.hold.flush():
            self._emit(item, boxes)
        if self._prev is not None:
            rgb, pts, dur, boxes = self._prev
            self._prev = None
            self._write(rgb, pts, dur or self.frame_ticks, boxes)
        if self.decoded == 0:
            raise DecodeError("no video frame could be decoded")
        expected = self.p.frames if self.p.frames_listed else None
        if expected is not None and self.decoded < expected:
            raise DecodeError(f"video ends early: {self.decoded} of the {expected} frames "
                              "its header lists (a truncated file?)")
        assert self.writer is not None
        self.writing = True
        try:
            self.writer.finish()
        except self.av.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise
            raise EncodeError(f"video encoding failed at the end: {_short(exc)}") from None
        self.writing = False
