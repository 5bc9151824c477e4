"""Open a video with PyAV, read its header and check the ``[video]`` limits before decoding.

Everything here comes from the container and codec headers (FFmpeg's probe reads at most a
few packets to fill in the codec parameters); no frame is decoded by us before
:func:`check_limits` has passed. The header can lie (a 60-minute duration over one second of
data, a frame count that never arrives): :mod:`edgeguard.video.transcode` enforces the same
limits again on what it actually decodes, and a stream that ends short of its header is a
failure, not a shorter output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from edgeguard.config import VideoConfig
from edgeguard.errors import DecodeError, ImageTooLargeError, UnsupportedFormatError

logger = logging.getLogger(__name__)

#: Output muxer and file suffix per sniffed input container. WebM allows only VP8/VP9/AV1
#: video, so a WebM input comes out as Matroska (the format WebM is a profile of) with the
#: H.264 video and the original audio packets.
OUTPUT: Final = {
    "mp4": ("mp4", ".mp4"),
    "mov": ("mov", ".mov"),
    "matroska": ("matroska", ".mkv"),
    "webm": ("matroska", ".mkv"),
    "avi": ("avi", ".avi"),
}
#: Input suffixes kept as they are (any spelling) when the output format matches.
SUFFIXES: Final = {
    "mp4": (".mp4", ".m4v"),
    "mov": (".mov", ".qt"),
    "matroska": (".mkv",),
    "avi": (".avi",),
}
# The most streams a file may declare (a real phone video has 2-5; a fuzzed header more).
MAX_STREAMS: Final = 64


@dataclass(frozen=True)
class Probe:
    """What the header says about a video."""

    container: str  # the sniffed input container: mp4, mov, matroska, webm, avi
    codec: str  # the video codec's FFmpeg name
    width: int  # coded size, before rotation
    height: int
    fps: float  # average frame rate (0.0 when the header has none)
    duration_s: float | None  # None when the header has no duration
    frames: int | None  # header frame count, or duration x rate; None when neither is known
    audio: str | None  # the first audio stream's codec name, None without audio
    frames_listed: bool = False  # ``frames`` is the container's own count (MP4/MOV sample
    # tables list every frame), not an estimate from the duration

    @property
    def pixels(self) -> int:
        return self.width * self.height


def short_error(exc: BaseException) -> str:
    """FFmpeg's reason without the file name PyAV appends (it would leak into logs)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).split(": '", 1)[0].strip().rstrip(".")


_M_MMAP_THRESHOLD: Final = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD: Final = 1 << 20


def _pin_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at 1 MiB.

    glibc raises the threshold (up to 32 MiB) each time a large mmapped block is freed, so
    after the first freed 6 MB video frame every later frame comes from the heap, whose
    fragments stay resident: 369 MB peak on a 1080p clip instead of 302 MB
    (benchmarks/video.py). Setting it once with mallopt turns the dynamic rise off. A no-op
    where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        logger.debug("mallopt(M_MMAP_THRESHOLD) refused")


def av_module() -> Any:
    """PyAV, imported on first use; an InputError naming the missing extra otherwise."""
    try:
        import av
    except ImportError as exc:
        raise UnsupportedFormatError(
            "video input needs PyAV, which is not installed (pip install 'edgeguard[video]')"
        ) from exc
    av.logging.set_level(None)  # FFmpeg's own log lines: off (they name files and hosts)
    _pin_mmap_threshold()
    return av


def open_input(path: Path) -> Any:
    """``av.open`` for reading, with FFmpeg errors turned into one-line InputErrors."""
    av = av_module()
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise DecodeError(f"not a readable video: {short_error(exc)}") from None


def probe(container: Any, kind: str) -> Probe:
    """Read the header of an open input container."""
    if len(container.streams) > MAX_STREAMS:
        raise DecodeError(f"not a usable video: {len(container.streams)} streams declared")
    videos = [s for s in container.streams.video
              if not (s.disposition and "attached_pic" in str(s.disposition).lower())]
    audios = list(container.streams.audio)
    if not videos:
        if audios:
            raise UnsupportedFormatError("no video stream (an audio-only file)")
        raise DecodeError("no video stream")
    v = videos[0]
    cc = v.codec_context
    width, height = int(cc.width or 0), int(cc.height or 0)
    if width <= 0 or height <= 0:
        raise DecodeError("not a usable video: the header gives no frame size")
    rate = v.average_rate or v.guessed_rate or v.base_rate
    fps = float(rate) if rate else 0.0
    duration_s: float | None = None
    if v.duration is not None and v.time_base is not None:
        duration_s = float(v.duration * Fraction(v.time_base))
    elif container.duration is not None:
        duration_s = container.duration / 1_000_000.0
    if duration_s is not None and (not math.isfinite(duration_s) or duration_s <= 0):
        duration_s = None
    frames: int | None = int(v.frames) if v.frames else None
    if frames is None and duration_s is not None and fps > 0:
        frames = math.ceil(duration_s * fps)
    return Probe(kind, cc.name or "?", width, height, fps, duration_s, frames,
                 audios[0].codec_context.name if audios else None,
                 frames_listed=bool(v.frames) and kind in ("mp4", "mov"))


def check_limits(p: Probe, limits: VideoConfig) -> None:
    """Refuse, from the header alone, what the configured limits exclude."""
    w, h = p.width, p.height
    if p.pixels > limits.max_pixels:
        raise ImageTooLargeError(
            f"video frame {w}x{h} ({p.pixels / 1e6:.1f} MP) is larger than video.max_pixels "
            f"({limits.max_pixels / 1e6:.1f} MP)")
    if p.duration_s is not None and p.duration_s > limits.max_seconds:
        raise ImageTooLargeError(
            f"video is {_clock(p.duration_s)} long (header); video.max_seconds allows "
            f"{_clock(limits.max_seconds)}")
    if p.frames is not None and p.frames * p.pixels > limits.max_total_pixels:
        raise ImageTooLargeError(
            f"video has {p.frames} frames of {w}x{h} (header): more than "
            f"video.max_total_pixels ({limits.max_total_pixels:.3g} pixels in all)")


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def output_name(rel: Path, kind: str) -> Path:
    """The outbox-relative name for inbox path ``rel`` of container ``kind``."""
    fmt, suffix = OUTPUT[kind]
    if rel.suffix.lower() in SUFFIXES.get(fmt, ()):
        return rel
    if rel.suffix.lower() in (".webm",) or rel.suffix.lower() in {
            s for group in SUFFIXES.values() for s in group}:
        return rel.with_suffix(suffix)
    return rel.with_name(rel.name + suffix)
