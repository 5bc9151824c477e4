"""Chooses the camera source for a spec (picamera2, V4L2 through OpenCV, a file played as a
camera) and re-exports the sources' interface. The interface, frames and colour order are
described in :mod:`edgeguard.sources.camera.base`; the adapters are one module each under
``edgeguard/sources/camera/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from edgeguard.sources.camera.base import (
    IMAGE_SUFFIXES,
    CameraError,
    EndOfStream,
    Frame,
    Size,
    Source,
    Spec,
    make_lores,
    parse_spec,
    yuv420_to_rgb,
)
from edgeguard.sources.camera.file import FILE_BUFFERS, FileSource
from edgeguard.sources.camera.picamera2 import (
    Picamera2Source,
    load_picamera2,
    picamera2_cameras,
)
from edgeguard.sources.camera.v4l2 import V4l2Source, usb_webcams

logger = logging.getLogger(__name__)

__all__ = ["FILE_BUFFERS", "IMAGE_SUFFIXES", "CameraError", "EndOfStream", "FileSource",
           "Frame", "Picamera2Source", "Size", "Source", "Spec", "V4l2Source", "choose",
           "load_picamera2", "make_lores", "parse_spec", "picamera2_cameras", "usb_webcams",
           "yuv420_to_rgb"]




def choose(spec: Spec, *, main_size: Size, lores_size: Size, fps: float, paced: bool = True,
           max_pixels: int = 64_000_000,
           list_picamera2: Callable[[], Sequence[dict[str, Any]]] = picamera2_cameras,
           list_usb: Callable[[], list[int]] = usb_webcams) -> Source | None:
    """The source for ``spec``; None for ``none`` and for ``auto`` when there is no camera.

    ``auto`` prefers a Raspberry Pi camera (libcamera, through picamera2), then a USB
    webcam (V4L2 through OpenCV), and says which in the log.
    """
    if spec.kind == "none":
        return None
    if spec.kind == "file":
        return FileSource(spec.path, lores_size=lores_size, fps=fps, paced=paced,
                          max_pixels=max_pixels)
    if spec.kind == "picamera2":
        return Picamera2Source(camera_num=spec.number, main_size=main_size,
                               lores_size=lores_size, fps=fps)
    if spec.kind == "v4l2":
        return V4l2Source(spec.number, main_size=main_size, lores_size=lores_size, fps=fps)
    # auto
    for info in list_picamera2():
        if "/usb" in str(info.get("Id", "")):
            continue  # libcamera lists UVC webcams too; OpenCV reads those better
        num = int(info.get("Num", 0))
        logger.info("camera auto: using picamera2 camera %d (%s)", num,
                    info.get("Model", "unknown model"))
        return Picamera2Source(camera_num=num, main_size=main_size, lores_size=lores_size,
                               fps=fps)
    usb = list_usb()
    if usb:
        logger.info("camera auto: using USB webcam /dev/video%d (V4L2)", usb[0])
        return V4l2Source(usb[0], main_size=main_size, lores_size=lores_size, fps=fps)
    logger.info("camera auto: no camera found; the inbox runs alone")
    return None
