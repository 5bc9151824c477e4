"""Short test videos made from the fresh clone's images (scikit-image's astronaut), with a
generated audio track, written with PyAV; and readers for what came out."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# Audio codec and sample format per container (what each can hold and PyAV encodes).
AUDIO = {"mp4": ("aac", "fltp"), "mov": ("aac", "fltp"), "matroska": ("libopus", "flt"),
         "webm": ("libopus", "flt"), "avi": ("mp3", "fltp")}
VIDEO = {"mp4": "libx264", "mov": "libx264", "matroska": "libx264", "webm": "libvpx-vp9",
         "avi": "mjpeg", "matroska_mjpeg": "mjpeg"}
RATE = 48_000
# Where the astronaut's face is in scikit-image's 512x512 picture (her head, generous).
ASTRONAUT_FACE = (165, 60, 265, 190)


@dataclass(frozen=True)
class Scene:
    """A frame size and, per frame, where the astronaut picture's top-left corner goes."""

    width: int
    height: int
    scale: float  # the 512x512 picture is resized by this
    offsets: tuple[tuple[int, int], ...]

    def face_box(self, n: int) -> tuple[int, int, int, int]:
        ox, oy = self.offsets[n]
        x1, y1, x2, y2 = (round(v * self.scale) for v in ASTRONAUT_FACE)
        return ox + x1, oy + y1, ox + x2, oy + y2


def moving_scene(frames: int, *, width: int = 480, height: int = 360,
                 scale: float = 0.5) -> Scene:
    """The picture slides left to right and a little down across a grey frame."""
    side = round(512 * scale)
    span = max(1, width - side)
    offsets = tuple((round(span * i / max(1, frames - 1)),
                     round((height - side) * (0.2 + 0.3 * i / max(1, frames - 1))))
                    for i in range(frames))
    return Scene(width, height, scale, offsets)


def render(scene: Scene, picture: np.ndarray) -> Iterator[np.ndarray]:
    import cv2

    side = round(512 * scene.scale)
    small = cv2.resize(picture, (side, side), interpolation=cv2.INTER_AREA)
    for ox, oy in scene.offsets:
        frame = np.full((scene.height, scene.width, 3), 96, np.uint8)
        frame[2:10, :] = 200  # a stripe: flat background
        x2, y2 = min(scene.width, ox + side), min(scene.height, oy + side)
        frame[oy:y2, ox:x2] = small[: y2 - oy, : x2 - ox]
        yield frame


def write_video(path: Path, frames: Iterator[np.ndarray] | list[np.ndarray], *, fmt: str,
                fps: int = 15, audio_s: float | None = None,
                metadata: dict[str, str] | None = None,
                options: dict[str, str] | None = None, rotation: int = 0) -> None:
    """Encode ``frames`` into ``path``; a 440 Hz tone of ``audio_s`` seconds as audio."""
    import av

    container = av.open(str(path), mode="w", format=fmt.split("_")[0], options=options or {})
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    v = container.add_stream(VIDEO[fmt], rate=fps)
    v.width, v.height = w, h
    v.pix_fmt = "yuvj420p" if VIDEO[fmt] == "mjpeg" else "yuv420p"
    if rotation:
        v.set_display_rotation(rotation)
    if VIDEO[fmt] == "libx264":
        v.codec_context.options = {"preset": "ultrafast", "crf": "18"}
    a = None
    if audio_s:
        codec, sample_fmt = AUDIO[fmt]
        a = container.add_stream(codec, rate=RATE)
        a.layout = "mono"
        a.format = sample_fmt
    container.metadata.update(metadata or {})

    def all_frames() -> Iterator[np.ndarray]:
        yield first
        yield from frames

    for n, rgb in enumerate(all_frames()):
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vf.pts = n
        vf.time_base = Fraction(1, fps)
        for pkt in v.encode(vf):
            container.mux(pkt)
    for pkt in v.encode(None):
        container.mux(pkt)
    if a is not None and audio_s:
        t = np.arange(int(RATE * audio_s)) / RATE
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        chunk = a.codec_context.frame_size or 1024
        for start in range(0, len(tone), chunk):
            part = tone[start:start + chunk]
            if len(part) < chunk:
                part = np.pad(part, (0, chunk - len(part)))
            af = av.AudioFrame.from_ndarray(part[None, :], format=a.format.name,
                                            layout="mono")
            af.sample_rate = RATE
            af.pts = start
            af.time_base = Fraction(1, RATE)
            for pkt in a.encode(af):
                container.mux(pkt)
        for pkt in a.encode(None):
            container.mux(pkt)
    container.close()


@dataclass(frozen=True)
class Contents:
    frames: list[np.ndarray]
    pts: list[int]
    time_base: Fraction
    duration_s: float  # the video stream's: last frame's pts + duration
    audio: list[bytes]
    codec: str
    metadata: dict[str, str]
    stream_metadata: list[dict[str, str]]
    kinds: list[str]


def read_video(path: Path) -> Contents:
    """Every decoded frame (RGB), the video timing, the audio packets' bytes, metadata."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames: list[np.ndarray] = []
        pts: list[int] = []
        audio: list[bytes] = []
        end = 0
        for packet in c.demux():
            if packet.stream.type == "audio":
                if packet.size:
                    audio.append(bytes(packet))
            elif packet.stream.index == v.index:
                if packet.pts is not None:
                    end = max(end, packet.pts + (packet.duration or 0))
                for frame in packet.decode():
                    frames.append(frame.to_ndarray(format="rgb24"))
                    pts.append(frame.pts)
        return Contents(frames, pts, Fraction(v.time_base), float(end * v.time_base), audio,
                        v.codec_context.name, dict(c.metadata),
                        [dict(s.metadata) for s in c.streams], [s.type for s in c.streams])


def header_timing(path: Path) -> tuple[int, float]:
    """The video stream's frame count and duration in seconds, as its header gives them."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return v.frames, float(v.duration * v.time_base)


def rotate_mp4(data: bytes, degrees: int) -> bytes:
    """Set the video track's display matrix (tkhd) to turn the picture ``degrees``
    clockwise, as a phone held upright writes it."""
    i = data.find(b"tkhd")
    if i < 0:
        raise ValueError("no tkhd box")
    version = data[i + 4]
    matrix_at = i + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one, minus = 0x00010000, 0xFFFF0000
    a, b, c, d = {90: (0, one, minus, 0), 180: (minus, 0, 0, minus),
                  270: (0, minus, one, 0)}[degrees]
    matrix = struct.pack(">9I", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    return data[:matrix_at] + matrix + data[matrix_at + 36:]


# -- hostile videos --------------------------------------------------------------------------


def long_header_short_data(path: Path) -> None:
    """An MP4 whose header (moov first) lists 60 minutes of frames, followed by the data of
    about the first second only."""
    frames = (np.full((32, 32, 3), i % 256, np.uint8) for i in range(3600))
    full = path.with_name(path.name + ".full")
    write_video(full, frames, fmt="mp4", fps=1, options={"movflags": "faststart"})
    data = full.read_bytes()
    full.unlink()
    mdat = data.find(b"mdat")
    path.write_bytes(data[: mdat + 4 + 3000])


def audio_only(path: Path) -> None:
    import av

    with av.open(str(path), mode="w", format="mp4") as c:
        a = c.add_stream("aac", rate=RATE)
        a.layout = "mono"
        a.format = "fltp"
        tone = np.zeros((1, 1024), np.float32)
        for n in range(20):
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate = RATE
            af.pts = n * 1024
            af.time_base = Fraction(1, RATE)
            for pkt in a.encode(af):
                c.mux(pkt)
        for pkt in a.encode(None):
            c.mux(pkt)


def huge_resolution(path: Path) -> None:
    """A Matroska file whose header claims 60000x60000 frames: a real 256x256 Motion JPEG
    video with its track's PixelWidth/PixelHeight and the frames' JPEG size fields patched
    (same byte lengths, so the file stays well-formed)."""
    write_video(path, [np.zeros((256, 256, 3), np.uint8)] * 3, fmt="matroska_mjpeg")
    data = path.read_bytes()
    for element in (b"\xb0\x82\x01\x00", b"\xba\x82\x01\x00"):  # PixelWidth, PixelHeight
        if element not in data:
            raise ValueError("no 2-byte pixel size element to patch")
        data = data.replace(element, element[:2] + struct.pack(">H", 60000), 1)
    sof = struct.pack(">BHH", 8, 256, 256)
    data = data.replace(b"\xff\xc0\x00\x11" + sof, b"\xff\xc0\x00\x11"
                        + struct.pack(">BHH", 8, 60000, 60000))
    path.write_bytes(data)


def corrupt_middle(good: bytes) -> bytes:
    """``good`` (an MP4 with its data after the header) with 2 kB of noise at 60 %."""
    rng = np.random.default_rng(7)
    at = int(len(good) * 0.6)
    return good[:at] + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes() + good[at + 2048:]
