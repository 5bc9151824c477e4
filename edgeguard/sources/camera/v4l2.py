"""A USB webcam through OpenCV's V4L2 backend as a camera source."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from edgeguard.sources.camera.base import (
    CameraError,
    Frame,
    Size,
    Source,
    make_lores,
)

logger = logging.getLogger(__name__)

# V4L2 drivers that are not cameras OpenCV can read, though they have capture nodes:
# the Pi's CSI receivers deliver raw Bayer that only libcamera can process, and the ISP,
# codec and decoder nodes are memory-to-memory devices. `auto` takes USB webcams only.
_UVC_DRIVER = "uvcvideo"



class V4l2Source(Source):
    """A USB webcam through OpenCV's V4L2 backend; lores is resized from main."""

    def __init__(self, number: int, *, main_size: Size, lores_size: Size, fps: float,
                 capture_factory: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.number = number
        self.name = f"v4l2:{number}"
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self._factory = capture_factory
        self._clock = clock
        self._cap: Any = None
        self._count = 0

    def open(self) -> None:
        if self._cap is not None:
            return
        factory = self._factory or (lambda n: cv2.VideoCapture(n, cv2.CAP_V4L2))
        cap = factory(self.number)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise CameraError(f"{self.name}: /dev/video{self.number} cannot be opened")
        w, h = self.main_size
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if got != (0, 0) and got != tuple(self.main_size):
            logger.warning("%s delivers %dx%d, not the %dx%d asked for", self.name, *got, w, h)
            self.main_size = got
        self._cap = cap
        logger.info("camera %s: %dx%d, lores %dx%d", self.name, *self.main_size,
                    *self.lores_size)

    def read(self, timeout: float) -> Frame | None:
        cap = self._cap
        if cap is None:
            raise CameraError(f"{self.name}: not open")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise CameraError(f"{self.name}: no frame (camera unplugged?)")
        captured = self._clock()
        main = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.main_size = (main.shape[1], main.shape[0])
        frame = Frame(self._count, captured, captured, main, make_lores(main, self.lores_size))
        self._count += 1
        return frame

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def usb_webcams(sys_root: Path = Path("/sys/class/video4linux")) -> list[int]:
    """/dev/videoN numbers of USB (UVC) webcams' capture nodes, from sysfs (no device is
    opened). A UVC camera has two nodes, capture (index 0) and metadata (index 1)."""
    found: list[int] = []
    try:
        entries = sorted(os.listdir(sys_root))
    except OSError:
        return found
    for name in entries:
        m = re.fullmatch(r"video(\d+)", name)
        if m is None:
            continue
        node = sys_root / name
        try:
            driver = os.path.basename(os.readlink(node / "device" / "driver"))
            index = (node / "index").read_text().strip()
        except OSError:
            continue
        if driver == _UVC_DRIVER and index == "0":
            found.append(int(m.group(1)))
    return found
