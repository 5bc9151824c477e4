"""The camera sources' common parts: the Source interface, Frame, errors, specs, conversion.

The adapters are one module each: :mod:`.picamera2`, :mod:`.v4l2`, :mod:`.file`;
:func:`edgeguard.camera.sources.choose` picks one.

Every source delivers :class:`Frame` objects: a full-resolution ``main`` image and a
reduced-resolution ``lores`` image of the same instant, both RGB ``uint8``, owned by the
frame (writable; the camera's buffers are already given back). A source is a context
manager: :meth:`Source.open` once, :meth:`Source.read` per frame, :meth:`Source.close`
(idempotent) at the end.

picamera2, cv2's V4L2 backend and the libcamera bindings are imported inside their adapter
only, when it opens: importing picamera2 changes the process environment
(LIBCAMERA_RPI_CONFIG_FILE) and starts libcamera's logging, which a machine without a
camera must not pay for.

Colour order, as the picamera2 manual's format table states: picamera2/libcamera
``"BGR888"`` is stored R, G, B in memory (an RGB numpy array) and ``"RGB888"`` is B, G, R.
The main stream asks for ``"BGR888"`` so frames arrive in the RGB order the detector,
redactor and encoder use, with no per-frame conversion.
"""

from __future__ import annotations

import abc
import logging
import re
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

from edgeguard.errors import EdgeGuardError

logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class CameraError(EdgeGuardError):
    """A camera cannot be found, opened or read."""


class EndOfStream(Exception):
    """A ``file:`` source has played its last frame."""


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One capture: main and lores from the same instant.

    ``index`` is the source's sequence number (a gap means frames the source dropped
    while we were busy); ``t`` is the stream time in seconds (capture time for cameras,
    index / fps for files), which the tracker and the video timeline use; ``captured`` is
    :func:`time.monotonic` when the frame left the source, for the frame-age bound.
    """

    index: int
    t: float
    captured: float
    main: np.ndarray  # RGB uint8 (H, W, 3), writable
    lores: np.ndarray  # RGB uint8 (h, w, 3)
    # An independent picture (an image of a ``file:`` folder): searched in full on its own;
    # no tracker, motion or bracket state carries to or from it.
    still: bool = False


class Source(abc.ABC):
    """A camera: open once, read frames, close (idempotent)."""

    name: str = "camera"
    fps: float = 0.0
    main_size: Size = (0, 0)
    lores_size: Size = (0, 0)

    @abc.abstractmethod
    def open(self) -> None:
        """Open and start the device; raise CameraError if it cannot be used."""

    @abc.abstractmethod
    def read(self, timeout: float) -> Frame | None:
        """The next frame; None when none came within ``timeout`` seconds.

        Raises CameraError when the device failed, EndOfStream after a file's last frame.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release the device; safe to call more than once."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# ----------------------------------------------------------------------------- conversion


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB ``uint8`` (height, width, 3) image from a YUV420 (I420) camera buffer.

    picamera2 returns a YUV420 stream as a (height * 3 / 2, stride) array: ``height`` rows
    of Y, then the U plane and the V plane, each ``height / 2`` rows of ``stride / 2`` bytes,
    so every array row below the Y plane holds two chroma rows. ``stride`` is often wider
    than ``width`` (the ISP pads rows to 32/64 bytes). Cropping the whole array to
    ``width`` columns would be wrong for the chroma part: the second chroma row in each
    array row starts at ``stride / 2``, not at ``width / 2``. So the planes are cut out the
    way picamera2's own JPEG path does it (request.py, ``MappedArray`` with
    ``reshape(rows * 2, stride // 2)``), packed into a tight I420 image and converted by
    OpenCV (BT.601 coefficients; the difference from Rec.709 does not matter to detection).
    """
    if not isinstance(yuv, np.ndarray) or yuv.dtype != np.uint8 or yuv.ndim != 2:
        raise ValueError("expected a 2-D uint8 YUV420 array")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"YUV420 needs an even, positive size, got {width}x{height}")
    rows, stride = yuv.shape
    if rows != height * 3 // 2 or stride < width or stride % 2:
        raise ValueError(f"YUV420 array {yuv.shape} does not fit {width}x{height} "
                         "(expected (height * 3 / 2, stride >= width), stride even)")
    if stride == width:
        packed = np.ascontiguousarray(yuv)
    else:
        yuv = np.ascontiguousarray(yuv)
        chroma = yuv[height:].reshape(height, stride // 2)  # U rows, then V rows
        half_w, half_h = width // 2, height // 2
        packed = np.empty((height * 3 // 2, width), np.uint8)
        packed[:height] = yuv[:height, :width]
        flat = packed[height:].reshape(-1)
        quarter = half_w * half_h
        flat[:quarter] = chroma[:half_h, :half_w].reshape(-1)
        flat[quarter:] = chroma[half_h:, :half_w].reshape(-1)
    return cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_I420)


def make_lores(main: np.ndarray, size: Size) -> np.ndarray:
    """The reduced stream a camera ISP would give for ``main``: scaled to ``size`` exactly
    (stretched when the aspect ratios differ, as the Pi ISP does)."""
    w, h = size
    if (main.shape[1], main.shape[0]) == (w, h):
        return main.copy()
    return cv2.resize(main, (w, h), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed ``camera.source`` value."""

    kind: str  # "none" | "auto" | "picamera2" | "v4l2" | "file"
    number: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "file":
            return f"file:{self.path}"
        if self.kind == "v4l2" or (self.kind == "picamera2" and self.number):
            return f"{self.kind}:{self.number}"
        return self.kind


_SPEC = re.compile(r"(none|auto)|picamera2(?::(\d+))?|v4l2:(\d+)|file:(.+)")


def parse_spec(text: str) -> Spec:
    m = _SPEC.fullmatch(text.strip())
    if m is None:
        raise CameraError(f"camera source {text!r} is not none, auto, picamera2[:N], v4l2:N "
                          "or file:PATH")
    if m.group(1):
        return Spec(m.group(1))
    if m.group(3) is not None:
        return Spec("v4l2", int(m.group(3)))
    if m.group(4) is not None:
        return Spec("file", path=m.group(4))
    return Spec("picamera2", int(m.group(2) or 0))
