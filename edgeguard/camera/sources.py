"""Camera sources behind one interface: picamera2, V4L2 (OpenCV), a file played as a camera.

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
import concurrent.futures
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from edgeguard.errors import EdgeGuardError

logger = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# V4L2 drivers that are not cameras OpenCV can read, though they have capture nodes:
# the Pi's CSI receivers deliver raw Bayer that only libcamera can process, and the ISP,
# codec and decoder nodes are memory-to-memory devices. `auto` takes USB webcams only.
_UVC_DRIVER = "uvcvideo"


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


# ----------------------------------------------------------------------------- picamera2


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


# ----------------------------------------------------------------------------- V4L2


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


# ----------------------------------------------------------------------------- files


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
        return Frame(index, index / self.fps, captured, rgb, make_lores(rgb, self.lores_size))

    def close(self) -> None:
        self._stop.set()
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        self._open = False


# ----------------------------------------------------------------------------- choosing


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
