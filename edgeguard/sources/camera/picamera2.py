"""picamera2 (libcamera) as a camera source; picamera2 is imported only when it opens."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from edgeguard.sources.camera.base import (
    CameraError,
    Frame,
    Size,
    Source,
    yuv420_to_rgb,
)

logger = logging.getLogger(__name__)



def load_picamera2() -> Any:
    """The Picamera2 class (imported here only: its package import has side effects)."""
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise CameraError(f"picamera2 is not available ({exc}); on Raspberry Pi OS: "
                          "apt install python3-picamera2 and a venv made with "
                          "--system-site-packages") from None
    return Picamera2


class Picamera2Source(Source):
    """A Raspberry Pi camera through picamera2: a video configuration with a full-resolution
    ``main`` stream (BGR888, i.e. RGB in memory) and a ``lores`` YUV420 stream (the only
    lores format a Pi 4 and older can produce), both taken from one ``capture_request()`` so
    they show the same instant; each request is released in a ``finally``.
    """

    MAIN_FORMAT = "BGR888"  # memory order R, G, B: an RGB array
    LORES_FORMAT = "YUV420"
    # Buffers per stream (CMA memory): 4 keep a 720p/1080p pipeline from starving; a 12 MP
    # main (36 MB a buffer) gets 2, as a Pi's default CMA area could not hold 4.
    BUFFER_COUNT = 4
    BIG_MAIN_BUFFERS = 2
    BIG_MAIN_PIXELS = 4_000_000

    def __init__(self, *, camera_num: int = 0, main_size: Size, lores_size: Size, fps: float,
                 factory: Callable[[int], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.camera_num = camera_num
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self.name = f"picamera2:{camera_num}"
        self._factory = factory
        self._clock = clock
        self._cam: Any = None
        self._lores_stride = 0
        self._pending: Any = None  # a capture job still running after a read timed out
        self._count = 0

    def configuration_args(self) -> dict[str, Any]:
        """Keyword arguments for ``Picamera2.create_video_configuration`` (tested against
        the real signature and picamera2's own configuration checks)."""
        return {
            "main": {"size": tuple(self.main_size), "format": self.MAIN_FORMAT},
            "lores": {"size": tuple(self.lores_size), "format": self.LORES_FORMAT},
            "buffer_count": (self.BUFFER_COUNT if self.main_size[0] * self.main_size[1]
                             <= self.BIG_MAIN_PIXELS else self.BIG_MAIN_BUFFERS),
            "controls": {"FrameRate": float(self.fps)},
            # No preview window and no hardware encoder: we only take requests.
            "display": None,
            "encode": None,
        }

    def open(self) -> None:
        if self._cam is not None:
            return
        factory = self._factory or load_picamera2()
        try:
            cam = factory(self.camera_num)
        except (RuntimeError, IndexError, OSError) as exc:
            raise CameraError(f"{self.name}: cannot open the camera: {exc}") from None
        try:
            config = cam.create_video_configuration(**self.configuration_args())
            cam.configure(config)
            actual = cam.camera_config  # libcamera may have adjusted sizes and strides
            self.main_size = _size(actual["main"]["size"])
            self.lores_size = _size(actual["lores"]["size"])
            self._lores_stride = int(actual["lores"].get("stride") or 0)
            if actual["lores"]["format"] != self.LORES_FORMAT:
                raise CameraError(f"{self.name}: lores came back as "
                                  f"{actual['lores']['format']}, not {self.LORES_FORMAT}")
            cam.start()
        except CameraError:
            _close_quietly(cam)
            raise
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            _close_quietly(cam)
            raise CameraError(f"{self.name}: cannot configure the camera: {exc}") from None
        self._cam = cam
        model = ""
        props = getattr(cam, "camera_properties", None)
        if isinstance(props, dict):
            model = str(props.get("Model", ""))
        if model:
            self.name = f"picamera2:{self.camera_num} ({model})"
        logger.info("camera %s: main %dx%d %s, lores %dx%d %s (stride %d), %.1f fps",
                    self.name, *self.main_size, self.MAIN_FORMAT, *self.lores_size,
                    self.LORES_FORMAT, self._lores_stride, self.fps)

    def read(self, timeout: float) -> Frame | None:
        cam = self._cam
        if cam is None:
            raise CameraError(f"{self.name}: not open")
        try:
            if self._pending is None:
                # A job, not a blocking call with a timeout: a timed-out blocking call leaves
                # its job queued, and the request it later takes would never be released.
                self._pending = cam.capture_request(wait=False)
            request = self._pending.get_result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return None
        except (RuntimeError, OSError) as exc:
            self._pending = None
            raise CameraError(f"{self.name}: capture failed: {exc}") from None
        self._pending = None
        captured = self._clock()
        try:
            main = request.make_array("main")
            yuv = request.make_array("lores")
            sequence = getattr(getattr(request, "request", None), "sequence", None)
        except (RuntimeError, ValueError, OSError) as exc:
            raise CameraError(f"{self.name}: cannot read the frame: {exc}") from None
        finally:
            request.release()
        lores = yuv420_to_rgb(yuv, *self.lores_size)
        index = int(sequence) if isinstance(sequence, int) else self._count
        self._count += 1
        if not main.flags.writeable:
            main = main.copy()
        return Frame(index, captured, captured, main, lores)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        pending, self._pending = self._pending, None
        try:
            cam.stop()
        except (RuntimeError, OSError) as exc:
            logger.warning("camera %s: stop failed: %s", self.name, exc)
        if pending is not None:
            # A request that completed after its read timed out: give it back. A job that
            # was cancelled or never completed holds nothing.
            with contextlib.suppress(concurrent.futures.TimeoutError,
                                     concurrent.futures.CancelledError, RuntimeError):
                pending.get_result(timeout=0).release()
        _close_quietly(cam)
        logger.info("camera %s closed", self.name)


def _size(value: Any) -> Size:
    w, h = value
    return int(w), int(h)


def _close_quietly(cam: Any) -> None:
    try:
        cam.close()
    except (RuntimeError, OSError) as exc:
        logger.warning("camera close failed: %s", exc)


def picamera2_cameras(load: Callable[[], Any] = load_picamera2) -> list[dict[str, Any]]:
    """libcamera's cameras as picamera2 lists them (no camera is opened); [] without
    picamera2."""
    try:
        cls = load()
    except CameraError as exc:
        logger.debug("no picamera2: %s", exc)
        return []
    try:
        return list(cls.global_camera_info())
    except (RuntimeError, OSError) as exc:
        logger.warning("libcamera cannot list cameras: %s", exc)
        return []
