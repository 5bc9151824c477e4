"""A video file or a folder of images played as a camera."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeguard.sources.camera.base import (
    IMAGE_SUFFIXES,
    CameraError,
    EndOfStream,
    Frame,
    Size,
    Source,
    make_lores,
)

logger = logging.getLogger(__name__)



FILE_BUFFERS = 4


class FileSource(Source):
    """A video file or a folder of images played as a camera.

    Frames keep the file's own size (``main_size`` is ignored); lores is resized from main
    to ``lores_size`` as an ISP would. With ``paced`` the file plays at its frame rate like a
    live camera: a consumer that falls behind gets the newest frame and the ones in between
    are skipped (their indexes are missing). Unpaced, every frame is delivered as fast as it
    is read, with stream time ``index / fps`` (tests and benchmarks).
    """

    def __init__(self, path: Path | str, *, lores_size: Size, fps: float,
                 paced: bool = True, max_pixels: int = 64_000_000,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.lores_size = lores_size
        self.fps = fps
        self.paced = paced
        self.max_pixels = max_pixels
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._cap: Any = None
        self._images: list[Path] = []
        self._next = 0  # index of the next frame to deliver
        self._t0 = 0.0
        self._open = False

    def open(self) -> None:
        if self._open:
            return
        if self.path.is_dir():
            self._images = sorted(
                p for p in self.path.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                and p.is_file())
            if not self._images:
                raise CameraError(f"{self.name}: no images in the folder")
        elif self.path.is_file():
            cap = cv2.VideoCapture(str(self.path))
            if not cap.isOpened():
                cap.release()
                raise CameraError(f"{self.name}: not a video OpenCV can read")
            file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if 0.5 <= file_fps <= 240.0:
                self.fps = file_fps
            self._cap = cap
        else:
            raise CameraError(f"{self.name}: no such file or folder")
        self._t0 = self._clock()
        self._next = 0
        self._stop.clear()
        self._open = True
        first = self._decode(0) if self._images else None
        if first is not None:
            self.main_size = (first.shape[1], first.shape[0])
        elif self._cap is not None:
            self.main_size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                              int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        logger.info("camera %s: %dx%d at %.2f fps, lores %dx%d%s", self.name,
                    *self.main_size, self.fps, *self.lores_size,
                    "" if self.paced else " (unpaced)")

    def _decode(self, i: int) -> np.ndarray:
        from edgeguard import codec  # the package's decoder: orientation, size limits
        from edgeguard.errors import InputError

        try:
            return codec.decode_file(self._images[i], max_pixels=self.max_pixels).rgb
        except InputError as exc:
            raise CameraError(f"{self.name}: {self._images[i].name}: {exc}") from None

    def _grab(self) -> np.ndarray | None:
        """Decode the next frame (None at the end); ``self._next`` moves past it."""
        i = self._next
        if self._images:
            if i >= len(self._images):
                return None
            rgb = self._decode(i)
        else:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                return None
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._next = i + 1
        return rgb

    def _skip(self) -> bool:
        if self._images:
            if self._next >= len(self._images):
                return False
        elif not self._cap.grab():
            return False
        self._next += 1
        return True

    def read(self, timeout: float) -> Frame | None:
        if not self._open:
            raise CameraError(f"{self.name}: not open")
        if self.paced:
            due = self._t0 + self._next / self.fps
            now = self._clock()
            if due > now:
                if due - now > timeout:
                    self._sleep(timeout)
                    return None
                self._sleep(due - now)
            # A live camera would have replaced frames we were too slow for: skip them.
            # It keeps FILE_BUFFERS buffers (picamera2's default for video), so a reader
            # that is late by fewer frames than that loses none.
            newest = int((self._clock() - self._t0) * self.fps)
            while self._next < newest - FILE_BUFFERS + 1:
                if not self._skip():
                    raise EndOfStream(self.name)
        index = self._next
        rgb = self._grab()
        if rgb is None:
            raise EndOfStream(self.name)
        self.main_size = (rgb.shape[1], rgb.shape[0])
        # A buffered frame was captured at its own time, not when it was read.
        captured = self._clock()
        if self.paced:
            captured = min(captured, self._t0 + index / self.fps)
        return Frame(index, index / self.fps, captured, rgb, make_lores(rgb, self.lores_size),
                     still=bool(self._images))

    def close(self) -> None:
        self._stop.set()
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._open = False
