"""The real picamera2 package, without a camera.

On a build machine picamera2 imports with Debian's python3-libcamera (bookworm-backports,
made visible to the venv by tools/camera-test-env.sh) and, when no real pykms/kms++ is
installed, the stub in tests/stubs for its DRM preview import. Then:

- our calls are checked against picamera2's real signatures;
- our video configuration goes through picamera2's own configuration code
  (create_video_configuration, align_stream, check_camera_config, Controls) on a camera
  object that only reports what an opened imx708 would;
- synthetic main and YUV420 buffers with padded strides go through picamera2's real buffer
  conversion (request.Helpers.make_array) into our converter, our detector and the whole
  camera service.

Tests marked ``camera`` open a real camera; they run on a Pi and skip elsewhere.
Set EDGEGUARD_REQUIRE_CAMERA_TEST=1 to make a missing picamera2 a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers.camera import is_redacted, moving_faces, padded_i420, padded_rgb
from helpers.daemon import PATIENCE

from edgeguard import config
from edgeguard.camera import sources
from edgeguard.camera.loop import CameraService, Sinks
from edgeguard.camera.sources import Picamera2Source, yuv420_to_rgb
from edgeguard.camera.sources import make_lores as make_lores_like_isp
from edgeguard.pipeline import Pipeline

STUBS = Path(__file__).parent / "stubs"
REQUIRED = "1" in (os.environ.get("EDGEGUARD_REQUIRE_CAMERA_TEST"),
                   os.environ.get("EDGEGUARD_REQUIRE_SYSTEM"))


def _missing(why: str) -> None:
    if REQUIRED:
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def picamera2() -> ModuleType:
    try:
        import libcamera  # noqa: F401
    except ImportError:
        _missing("python3-libcamera is not importable here (run tools/camera-test-env.sh)")
    stub = (importlib.util.find_spec("pykms") is None
            and importlib.util.find_spec("kms") is None)
    env = dict(os.environ)
    if stub:
        sys.path.insert(0, str(STUBS))
    try:
        import picamera2 as mod
    except ImportError as exc:
        _missing(f"picamera2 is not importable ({exc}); run tools/camera-test-env.sh")
    finally:
        if stub:
            sys.path.remove(str(STUBS))
        # picamera2's package import may point LIBCAMERA_RPI_CONFIG_FILE somewhere: undo it.
        os.environ.clear()
        os.environ.update(env)
    return mod


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline(config.Config())


def offline_class(picamera2: ModuleType) -> type:
    """Picamera2 with its own configuration code, on a camera that is not there."""
    base = picamera2.Picamera2

    class OfflinePicamera2(base):  # type: ignore[misc, valid-type]
        # What the ISP does to row lengths (bytes): 64-byte aligned on a Pi 4 and Pi 5.
        ALIGN = 64

        def __init__(self, camera_num: int = 0) -> None:
            # Not base.__init__: it opens the camera through libcamera's CameraManager.
            self.camera_idx = camera_num
            self.camera = object()  # "open"
            self.camera_properties_ = {"Model": "imx708", "ColorFilterArrangement": 0,
                                       "PixelArraySize": (4608, 2592)}
            info = SimpleNamespace(min=33333, max=120_000_000, default=33333)
            self.camera_ctrl_info = {"FrameDurationLimits": (None, info)}
            self.sensor_format = "SRGGB10_CSI2P"
            self.camera_config: dict[str, Any] = {}
            self.started = False
            self.calls: list[str] = []
            self.frames: list[tuple[np.ndarray, np.ndarray]] = []  # (main RGB, lores RGB)
            self.released = 0

        def configure(self, camera_config: dict[str, Any]) -> None:
            self.calls.append("configure")
            # picamera2's configure_ runs these before libcamera sees the configuration.
            self.check_camera_config(camera_config)
            picamera2.controls.Controls(self, controls=camera_config["controls"])
            cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()}
            w, _ = cfg["main"]["size"]
            cfg["main"]["stride"] = -(-w * 3 // self.ALIGN) * self.ALIGN
            lw, _ = cfg["lores"]["size"]
            cfg["lores"]["stride"] = -(-lw // (2 * self.ALIGN)) * 2 * self.ALIGN or lw
            self.camera_config = cfg

        def start(self, config: Any = None, show_preview: bool = False) -> None:
            self.calls.append("start")
            self.started = True

        def capture_request(self, wait: Any = None, signal_function: Any = None,
                            flush: Any = None) -> Any:
            self.calls.append(f"capture_request(wait={wait})")
            main, lores = self.frames.pop(0)
            return SimpleNamespace(get_result=lambda timeout=None: SyntheticRequest(
                self, padded_rgb(main, self.camera_config["main"]["stride"]),
                padded_i420(lores, self.camera_config["lores"]["stride"])))

        def stop(self) -> None:
            self.calls.append("stop")
            self.started = False

        def close(self) -> None:
            self.calls.append("close")
            self.camera = None

    return OfflinePicamera2


class SyntheticRequest:
    """A completed request whose buffers hold what the ISP would write, converted by
    picamera2's real Helpers.make_array (what CompletedRequest.make_array does to the
    mapped buffer)."""

    def __init__(self, cam: Any, main_buf: np.ndarray, lores_buf: np.ndarray) -> None:
        import picamera2.request

        self.cam = cam
        self.buffers = {"main": main_buf, "lores": lores_buf}
        self.helpers = picamera2.request.Helpers(cam)

    def make_array(self, name: str) -> np.ndarray:
        array: np.ndarray = self.helpers.make_array(self.buffers[name],
                                                    self.cam.camera_config[name])
        return array

    def release(self) -> None:
        self.cam.released += 1


DEFAULT = config.CameraConfig()
MAIN, LORES = DEFAULT.main_size, DEFAULT.lores_size


def adapter(**kw: Any) -> Picamera2Source:
    args: dict[str, Any] = {"main_size": MAIN, "lores_size": LORES, "fps": 15.0}
    return Picamera2Source(**(args | kw))


# ----------------------------------------------------------------------------- signatures


def test_our_calls_match_picamera2s_real_signatures(picamera2: ModuleType) -> None:
    P = picamera2.Picamera2
    src = adapter()
    calls = [
        (P.__init__, (None, 0), {}),
        (P.create_video_configuration, (None,), src.configuration_args()),
        (P.configure, (None, {}), {}),
        (P.start, (None,), {}),
        (P.capture_request, (None,), {"wait": False}),
        (picamera2.job.Job.get_result, (None,), {"timeout": 0.5}),
        (picamera2.request.CompletedRequest.make_array, (None, "main"), {}),
        (picamera2.request.CompletedRequest.release, (None,), {}),
        (P.stop, (None,), {}),
        (P.close, (None,), {}),
        (P.global_camera_info, (), {}),
    ]
    for fn, args, kwargs in calls:
        inspect.signature(fn).bind(*args, **kwargs)  # TypeError if we call it wrongly
    assert isinstance(inspect.getattr_static(P, "global_camera_info"), staticmethod)
    import libcamera

    assert hasattr(libcamera.Request, "sequence")  # the frame number we read from a request


def test_no_camera_here_is_reported_as_such(picamera2: ModuleType) -> None:
    if picamera2.Picamera2.global_camera_info():
        pytest.skip("this machine has a camera")
    assert sources.picamera2_cameras() == []
    with pytest.raises(sources.CameraError, match="cannot open"):
        adapter().open()


# ----------------------------------------------------------------------------- configuration


def test_our_configuration_passes_picamera2s_own_checks(picamera2: ModuleType) -> None:
    cam = offline_class(picamera2)()
    config_ = cam.create_video_configuration(**adapter().configuration_args())
    cam.check_camera_config(config_)  # raises RuntimeError when picamera2 disagrees
    assert config_["main"]["format"] == "BGR888" and config_["lores"]["format"] == "YUV420"
    assert config_["display"] is None and config_["encode"] is None
    # The default sizes are already "optimal" for the ISP of a Pi 4 (VC4) and a Pi 5
    # (PiSP): picamera2's alignment leaves them as they are, so rows carry no padding the
    # hardware must skip (320 would become 256 on a Pi 5: YUV420 widths align to 128 there).
    for platform in (picamera2.platform.Platform.VC4, picamera2.platform.Platform.PISP):
        with _platform(picamera2, platform):
            aligned = {k: dict(config_[k]) for k in ("main", "lores")}
            picamera2.Picamera2.align_configuration(aligned, optimal=True)
            assert aligned["main"]["size"] == MAIN
            assert aligned["lores"]["size"] == LORES
    controls = picamera2.controls.Controls(cam, controls=config_["controls"])
    assert controls.FrameDurationLimits == (66666, 66666)  # FrameRate 15 -> 1/15 s
    # A 12 MP main (Camera Module 3 full resolution, for 12 MP stills) passes too, with
    # fewer buffers.
    full = cam.create_video_configuration(**adapter(main_size=(4608, 2592)).configuration_args())
    cam.check_camera_config(full)
    assert full["main"]["size"] == (4608, 2592) and full["buffer_count"] == 2


def test_picamera2s_checks_are_real_a_bad_configuration_fails(picamera2: ModuleType) -> None:
    # The control for the test above: the same checks reject what a Pi 4 cannot do.
    cam = offline_class(picamera2)()
    with _platform(picamera2, picamera2.platform.Platform.VC4):
        rgb_lores = cam.create_video_configuration(
            **(adapter().configuration_args() | {"lores": {"size": (320, 180),
                                                          "format": "RGB888"}}))
        with pytest.raises(RuntimeError, match="lores stream must be YUV"):
            cam.check_camera_config(rgb_lores)
    big = cam.create_video_configuration(
        **adapter(lores_size=(1920, 1080)).configuration_args())
    with pytest.raises(RuntimeError, match="may not exceed"):
        cam.check_camera_config(big)
    odd = cam.create_video_configuration(**adapter(lores_size=(321, 181)).configuration_args())
    odd["lores"]["size"] = (321, 181)
    with pytest.raises(RuntimeError, match="even"):
        cam.check_camera_config(odd)


@contextlib.contextmanager
def _platform(picamera2: ModuleType, platform: Any) -> Any:
    old = picamera2.Picamera2.platform
    picamera2.Picamera2.platform = platform
    try:
        yield
    finally:
        picamera2.Picamera2.platform = old


# ----------------------------------------------------------------------------- buffers


@pytest.mark.parametrize("stride", [384, 448, 512])
def test_padded_yuv420_goes_through_picamera2_into_the_detector(
        picamera2: ModuleType, pipe: Pipeline, astronaut_rgb: np.ndarray, stride: int) -> None:
    scene = moving_faces(astronaut_rgb, n=1, head_px=150)
    main = scene.frames[0]
    lw, lh = LORES
    lores_rgb = make_lores_like_isp(main, LORES)
    buf = padded_i420(lores_rgb, stride)  # a mapped camera buffer is a flat uint8 array
    arr = picamera2.request.Helpers(None).make_array(
        buf, {"format": "YUV420", "size": LORES, "stride": stride})
    assert arr.shape == (lh * 3 // 2, stride)  # picamera2 leaves the stride in
    rgb = yuv420_to_rgb(arr, lw, lh)
    assert np.abs(rgb.astype(int) - lores_rgb).mean() < 3
    found = pipe.detector.detect(rgb)
    scale = lw / main.shape[1]
    for x1, y1, x2, y2 in scene.faces[0]:  # every face, found where it is
        cx, cy = (x1 + x2) / 2 * scale, (y1 + y2) / 2 * scale
        assert any(d.box.x1 < cx < d.box.x2 and d.box.y1 < cy < d.box.y2 for d in found)


def test_the_whole_service_on_picamera2_requests(picamera2: ModuleType, pipe: Pipeline,
                                                 astronaut_rgb: np.ndarray,
                                                 tmp_path: Path) -> None:
    scene = moving_faces(astronaut_rgb, n=4, fps=15.0)
    cls = offline_class(picamera2)
    cams: list[Any] = []

    def factory(num: int) -> Any:
        cam = cls(num)
        cam.frames = [(f, make_lores_like_isp(f, LORES)) for f in scene.frames]
        cams.append(cam)
        return cam

    src = adapter(factory=factory)
    cfg = config.from_dict({"camera": {"source": "picamera2"}})
    stills: list[tuple[Path, int]] = []
    svc = CameraService(cfg, pipe, Sinks(tmp_path, on_output=lambda k, p, i: stills.append((p, i))),
                        source=src)
    svc.snap()
    svc.start()
    import time

    deadline = time.monotonic() + 20 * PATIENCE
    while (not stills or svc.status()["frames"] < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    svc.stop()
    (cam,) = cams
    assert cam.calls[:3] == ["configure", "start", "capture_request(wait=False)"]
    assert cam.calls[-2:] == ["stop", "close"]
    assert cam.released == svc.status()["frames"] >= 4  # every request went back
    (path, _), = stills
    from helpers.images import decode

    out = decode(path.read_bytes())
    assert out.shape == (720, 1280, 3)
    for box in scene.faces[0]:
        assert is_redacted(out, scene.frames[0], box)


# ----------------------------------------------------------------------------- real camera


def _camera_count() -> int:
    try:
        return len(sources.picamera2_cameras())
    except Exception:
        return 0


@pytest.mark.camera
def test_a_real_camera_delivers_matching_main_and_lores(picamera2: ModuleType) -> None:
    if not _camera_count():
        pytest.skip("no camera attached (libcamera lists none)")
    with adapter() as src:
        frames = [src.read(5.0) for _ in range(5)]
    got = [f for f in frames if f is not None]
    assert got and all(f.main.shape == (MAIN[1], MAIN[0], 3)
                       and f.lores.shape == (LORES[1], LORES[0], 3) for f in got)
    # Same instant, same view: the lores frame is the main frame scaled down.
    f = got[-1]
    small = make_lores_like_isp(f.main, LORES).astype(int)
    assert np.abs(small - f.lores).mean() < 20


@pytest.mark.camera
def test_a_real_usb_webcam_delivers_frames() -> None:
    cams = sources.usb_webcams()
    if not cams:
        pytest.skip("no USB webcam attached")
    with sources.V4l2Source(cams[0], main_size=(640, 480), lores_size=(320, 240),
                            fps=15) as src:
        f = src.read(5.0)
    assert f is not None and f.main.ndim == 3 and f.lores.shape == (240, 320, 3)
