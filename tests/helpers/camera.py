"""Camera test scenes: real faces (scikit-image's astronaut) moving across a background,
written as a lossless FFV1 video (so the raw pixels are known exactly), and the
checks that tell a redacted face from a raw one in lossy video or JPEG output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# The astronaut's head with hair in data.astronaut() (rows, columns), and the face proper
# (eyes to chin) inside that crop, in crop pixels: BlazeFace finds the face at about
# (171, 66)-(279, 173) of the full image.
HEAD = (slice(20, 210), slice(140, 310))
FACE_IN_HEAD = (45, 60, 125, 150)  # x1, y1, x2, y2 in the 170x190 crop


@dataclass(frozen=True)
class Scene:
    frames: list[np.ndarray]  # RGB uint8
    faces: list[list[tuple[int, int, int, int]]]  # per frame: the inner face box of each head
    fps: float

    def write(self, folder: Path) -> Path:
        """The frames as a lossless video (FFV1 in Matroska) in ``folder``; its path. A
        video, not a folder of images: each image of a folder is an independent still."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "clip.mkv"
        h, w = self.frames[0].shape[:2]
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), self.fps, (w, h))
        assert out.isOpened(), "this OpenCV cannot write FFV1"
        try:
            for f in self.frames:
                out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        finally:
            out.release()
        return path

    def write_images(self, folder: Path) -> Path:
        """The frames as a folder of images (a `file:` folder source: each an independent
        still); the folder."""
        folder.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(self.frames):
            # BMP: lossless like PNG, and ten times faster to write and read
            cv2.imwrite(str(folder / f"{i:04d}.bmp"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        return folder


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A colour gradient with mild noise: not flat (the tile skipper must not skip it),
    nothing face-like."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 120)], -1)
    return np.clip(bg + rng.integers(-8, 9, bg.shape), 0, 255).astype(np.uint8)


def moving_faces(astronaut: np.ndarray, *, n: int = 16, size: tuple[int, int] = (1280, 720),
                 head_px: int = 130, fps: float = 8.0,
                 tracks: tuple[tuple[float, float, float, float], ...] | None = None) -> Scene:
    """Heads ``head_px`` tall moving at constant velocity (pixels per frame) across the frame.

    ``tracks`` are (x0, y0, vx, vy) per head; by default one goes right and down from the top
    left, one left and up from the bottom right, and they pass each other mid-frame.
    """
    w, h = size
    head = astronaut[HEAD]
    hh = head_px
    hw = round(hh * head.shape[1] / head.shape[0])
    head = cv2.resize(head, (hw, hh), interpolation=cv2.INTER_AREA)
    s = hh / 190
    fx1, fy1, fx2, fy2 = (round(v * s) for v in FACE_IN_HEAD)
    if tracks is None:
        tracks = ((60, 60, 45, 12), (w - 60 - hw, h - 60 - hh, -45, -12))
    bg = background(w, h)
    frames, faces = [], []
    for i in range(n):
        img = bg.copy()
        boxes = []
        for x0, y0, vx, vy in tracks:
            x = _bounce(x0 + vx * i, w - hw)
            y = _bounce(y0 + vy * i, h - hh)
            img[y:y + hh, x:x + hw] = head
            boxes.append((x + fx1, y + fy1, x + fx2, y + fy2))
        frames.append(img)
        faces.append(boxes)
    return Scene(frames, faces, fps)


def _bounce(pos: float, limit: int) -> int:
    """``pos`` reflected into [0, limit] (a head bounces off the frame's edges)."""
    period = 2 * limit
    p = pos % period
    return round(p if p <= limit else period - p)


def _high_pass(rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), 2.0)


def similarity(out: np.ndarray, raw: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Correlation of the fine detail (high-pass) of ``out`` and ``raw`` inside ``box``:
    about 0.98 for the raw face after MPEG-4 or JPEG compression, under 0.4 once redacted."""
    x1, y1, x2, y2 = box
    a = _high_pass(np.ascontiguousarray(out[y1:y2, x1:x2])).ravel()
    b = _high_pass(np.ascontiguousarray(raw[y1:y2, x1:x2])).ravel()
    a -= a.mean()
    b -= b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def mean_diff(out: np.ndarray, raw: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    return float(np.abs(out[y1:y2, x1:x2].astype(np.int16)
                        - raw[y1:y2, x1:x2].astype(np.int16)).mean())


def is_redacted(out: np.ndarray, raw: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """The face in ``box`` differs strongly from the raw face: its detail is gone and its
    pixels moved far (compression alone gives similarity ~0.98 and a mean difference ~4)."""
    return similarity(out, raw, box) < 0.6 and mean_diff(out, raw, box) > 12.0


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return frames


def padded_i420(rgb: np.ndarray, stride: int, fill: int = 77) -> np.ndarray:
    """The libcamera YUV420 buffer layout for ``rgb``: Y rows of ``stride`` bytes, then the
    U and V planes with rows of ``stride / 2`` bytes; padding bytes set to ``fill``."""
    h, w = rgb.shape[:2]
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    y = i420[:h]
    uv = i420[h:].reshape(-1)
    u = uv[:w * h // 4].reshape(h // 2, w // 2)
    v = uv[w * h // 4:].reshape(h // 2, w // 2)
    buf = np.full(stride * h * 3 // 2, fill, np.uint8)
    ys = buf[:stride * h].reshape(h, stride)
    ys[:, :w] = y
    us = buf[stride * h:stride * h * 5 // 4].reshape(h // 2, stride // 2)
    us[:, :w // 2] = u
    vs = buf[stride * h * 5 // 4:].reshape(h // 2, stride // 2)
    vs[:, :w // 2] = v
    return buf


def padded_rgb(rgb: np.ndarray, stride: int, fill: int = 77) -> np.ndarray:
    """A picamera2 "BGR888" buffer (bytes R, G, B per pixel) with rows of ``stride`` bytes."""
    h, w = rgb.shape[:2]
    buf = np.full(stride * h, fill, np.uint8)
    buf.reshape(h, stride)[:, :w * 3] = rgb.reshape(h, w * 3)
    return buf
