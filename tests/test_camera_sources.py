"""Camera sources: specs, YUV420 conversion, file playback, auto discovery, and the picamera2
adapter's request handling against a small fake (the real picamera2 is exercised in
test_camera_picamera2.py)."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers.camera import padded_i420

from edgeguard.camera import sources
from edgeguard.camera.sources import (
    CameraError,
    EndOfStream,
    FileSource,
    Picamera2Source,
    Spec,
    V4l2Source,
    parse_spec,
    yuv420_to_rgb,
)

# ----------------------------------------------------------------------------- specs


@pytest.mark.parametrize(("text", "spec"), [
    ("none", Spec("none")), ("auto", Spec("auto")), ("picamera2", Spec("picamera2", 0)),
    ("picamera2:1", Spec("picamera2", 1)), ("v4l2:2", Spec("v4l2", 2)),
    ("file:/tmp/a b.mp4", Spec("file", path="/tmp/a b.mp4")),
])
def test_parse_spec(text: str, spec: Spec) -> None:
    assert parse_spec(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize("text", ["", "usb", "v4l2", "v4l2:x", "file:", "picamera2:-1"])
def test_bad_specs(text: str) -> None:
    with pytest.raises(CameraError):
        parse_spec(text)


# ----------------------------------------------------------------------------- YUV420


def scene_rgb(w: int = 320, h: int = 180) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("stride", [320, 384, 448])
def test_yuv420_with_any_stride_gives_the_picture(stride: int) -> None:
    rgb = scene_rgb()
    arr = padded_i420(rgb, stride).reshape(180 * 3 // 2, stride)  # picamera2's array shape
    out = yuv420_to_rgb(arr, 320, 180)
    assert out.shape == (180, 320, 3)
    assert np.abs(out.astype(int) - rgb).mean() < 3


def test_cropping_the_whole_array_to_width_would_scramble_colour() -> None:
    # The control for the test above: the obvious arr[:, :width] is wrong for the chroma
    # rows as soon as the stride is padded.
    rgb = scene_rgb()
    arr = padded_i420(rgb, 384).reshape(270, 384)
    naive = cv2.cvtColor(np.ascontiguousarray(arr[:, :320]), cv2.COLOR_YUV2RGB_I420)
    assert np.abs(naive.astype(int) - rgb).mean() > 10


@pytest.mark.parametrize(("shape", "w", "h"), [((270, 320), 321, 180), ((269, 320), 320, 180),
                                               ((270, 300), 320, 180), ((270, 321), 320, 180)])
def test_yuv420_rejects_arrays_that_do_not_fit(shape: tuple[int, int], w: int, h: int) -> None:
    with pytest.raises(ValueError):
        yuv420_to_rgb(np.zeros(shape, np.uint8), w, h)


# ----------------------------------------------------------------------------- files


def write_folder(folder: Path, n: int, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    folder.mkdir()
    frames = []
    for i in range(n):
        f = np.full((size[1], size[0], 3), (i * 20, 100, 200 - i * 10), np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        frames.append(f)
    (folder / ".hidden.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    return frames


def test_a_folder_plays_as_a_camera(tmp_path: Path) -> None:
    frames = write_folder(tmp_path / "f", 5)
    with FileSource(tmp_path / "f", lores_size=(32, 24), fps=10.0, paced=False) as src:
        assert src.main_size == (64, 48)
        got = []
        with pytest.raises(EndOfStream):
            while True:
                fr = src.read(1.0)
                assert fr is not None
                got.append(fr)
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert [f.t for f in got] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    for f, raw in zip(got, frames, strict=True):
        assert np.array_equal(f.main, raw) and f.main.flags.writeable
        assert f.lores.shape == (24, 32, 3)


def test_a_video_file_plays_at_its_own_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 12.0, (64, 48))
    for i in range(6):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    with FileSource(path, lores_size=(32, 24), fps=30.0, paced=False) as src:
        assert src.fps == pytest.approx(12.0)
        n = 0
        with pytest.raises(EndOfStream):
            while src.read(1.0) is not None:
                n += 1
    assert n == 6


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_paced_playback_skips_what_a_slow_consumer_missed(tmp_path: Path) -> None:
    write_folder(tmp_path / "f", 10)
    clock = FakeClock()
    src = FileSource(tmp_path / "f", lores_size=(32, 24), fps=10.0, paced=True,
                     clock=clock, sleep=clock.sleep)
    src.open()
    first = src.read(1.0)
    assert first is not None and first.index == 0
    clock.now += 0.25  # busy for two and a half frame intervals: the buffers held them
    kept = src.read(1.0)
    assert kept is not None and kept.index == 1
    assert kept.captured == pytest.approx(100.1)  # captured at its time, not when read
    clock.now += 0.4  # now six and a half intervals late: more than the 4 buffers hold
    late = src.read(1.0)
    assert late is not None and late.index == 3  # frame 2 was replaced
    for i in (4, 5, 6):  # the buffered ones come at once
        f = src.read(1.0)
        assert f is not None and f.index == i and clock.now == pytest.approx(100.65)
    nxt = src.read(1.0)  # waits (on the fake clock) for frame 7's time
    assert nxt is not None and nxt.index == 7 and clock.now == pytest.approx(100.7)
    assert src.read(0.01) is None  # frame 8 is 0.1 s away: a short timeout gives None
    assert clock.now == pytest.approx(100.71)
    src.close()
    src.close()


def test_missing_or_empty_file_sources(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no such file"):
        FileSource(tmp_path / "nope", lores_size=(32, 24), fps=5).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        FileSource(tmp_path / "empty", lores_size=(32, 24), fps=5).open()
    (tmp_path / "x.mp4").write_bytes(b"not a video")
    with pytest.raises(CameraError, match="not a video"):
        FileSource(tmp_path / "x.mp4", lores_size=(32, 24), fps=5).open()


# ----------------------------------------------------------------------------- discovery


def test_auto_prefers_a_pi_camera_then_a_usb_webcam() -> None:
    kw: dict[str, Any] = {"main_size": (1280, 720), "lores_size": (320, 180), "fps": 15.0}
    pi = [{"Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "Num": 0, "Model": "imx708"}]
    usb_only = [{"Id": "/base/scb/pcie@7d500000/pci@0,0/usb@0,0-1:1.0-046d:0825", "Num": 0}]
    src = sources.choose(Spec("auto"), list_picamera2=lambda: pi, list_usb=lambda: [4], **kw)
    assert isinstance(src, Picamera2Source) and src.camera_num == 0
    src = sources.choose(Spec("auto"), list_picamera2=lambda: usb_only, list_usb=lambda: [4],
                         **kw)
    assert isinstance(src, V4l2Source) and src.number == 4
    assert sources.choose(Spec("auto"), list_picamera2=list, list_usb=list, **kw) is None
    assert sources.choose(Spec("none"), **kw) is None
    assert isinstance(sources.choose(Spec("v4l2", 1), **kw), V4l2Source)
    assert isinstance(sources.choose(Spec("picamera2", 1), **kw), Picamera2Source)


def test_usb_webcams_are_found_in_sysfs(tmp_path: Path) -> None:
    root = tmp_path / "video4linux"
    drivers = tmp_path / "drivers"
    for name in ("uvcvideo", "bcm2835-codec", "rp1-cfe"):
        (drivers / name).mkdir(parents=True)
    for n, driver, index in [(0, "rp1-cfe", 0), (1, "uvcvideo", 0), (2, "uvcvideo", 1),
                             (10, "bcm2835-codec", 0)]:
        node = root / f"video{n}"
        (node / "device").mkdir(parents=True)
        os.symlink(drivers / driver, node / "device" / "driver")
        (node / "index").write_text(f"{index}\n")
    assert sources.usb_webcams(root) == [1]
    assert sources.usb_webcams(tmp_path / "missing") == []


def test_a_missing_v4l2_device_is_a_camera_error() -> None:
    src = V4l2Source(63, main_size=(640, 480), lores_size=(160, 120), fps=10)
    with pytest.raises(CameraError, match="/dev/video63"):
        src.open()
    src.close()


class FakeCapture:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)
        self.props: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FRAME_WIDTH: 64.0, cv2.CAP_PROP_FRAME_HEIGHT: 48.0}.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        self.released = True


def test_v4l2_frames_come_out_rgb_and_an_unplugged_camera_is_an_error() -> None:
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cap = FakeCapture([bgr])
    src = V4l2Source(0, main_size=(64, 48), lores_size=(32, 24), fps=10,
                     capture_factory=lambda n: cap)
    with src:
        fr = src.read(1.0)
        assert fr is not None and tuple(fr.main[0, 0]) == (0, 0, 255)
        assert fr.lores.shape == (24, 32, 3)
        assert cap.props[cv2.CAP_PROP_BUFFERSIZE] == 1
        with pytest.raises(CameraError, match="unplugged"):
            src.read(1.0)
    assert cap.released


# ----------------------------------------------------------------------------- picamera2 fake


class FakeJob:
    def __init__(self, result: Any = None, ready: bool = True) -> None:
        self.result = result
        self.ready = ready

    def get_result(self, timeout: float | None = None) -> Any:
        if not self.ready:
            raise concurrent.futures.TimeoutError()
        return self.result


class FakeRequest:
    def __init__(self, arrays: dict[str, np.ndarray], fail: bool = False) -> None:
        self.arrays = arrays
        self.fail = fail
        self.released = 0

    def make_array(self, name: str) -> np.ndarray:
        if self.fail:
            raise RuntimeError("buffer gone")
        return self.arrays[name].copy()

    def release(self) -> None:
        self.released += 1


class FakePicamera2:
    """Records what the adapter asks of picamera2 (the real class is tested elsewhere)."""

    def __init__(self, num: int) -> None:
        self.num = num
        self.config_args: dict[str, Any] = {}
        self.camera_config: dict[str, Any] = {}
        self.jobs: list[FakeJob] = []
        self.started = self.stopped = self.closed = 0
        self.camera_properties = {"Model": "imx708"}

    def create_video_configuration(self, **kw: Any) -> dict[str, Any]:
        self.config_args = kw
        return {"main": dict(kw["main"]), "lores": dict(kw["lores"])}

    def configure(self, config: dict[str, Any]) -> None:
        config["lores"]["stride"] = 384
        self.camera_config = config

    def start(self) -> None:
        self.started += 1

    def capture_request(self, wait: Any = None) -> FakeJob:
        assert wait is False
        return self.jobs.pop(0)

    def stop(self) -> None:
        self.stopped += 1

    def close(self) -> None:
        self.closed += 1


def test_the_picamera2_adapter_takes_main_and_lores_from_one_request() -> None:
    cam = FakePicamera2(0)
    rgb = scene_rgb()
    yuv = padded_i420(rgb, 384).reshape(270, 384)
    main = np.zeros((720, 1280, 3), np.uint8)
    good = FakeRequest({"main": main, "lores": yuv})
    broken = FakeRequest({}, fail=True)
    late = FakeRequest({"main": main, "lores": yuv})
    pending = FakeJob(late, ready=False)
    cam.jobs = [FakeJob(good), FakeJob(broken), pending]
    src = Picamera2Source(main_size=(1280, 720), lores_size=(320, 180), fps=15.0,
                          factory=lambda n: cam)
    src.open()
    assert cam.config_args["main"] == {"size": (1280, 720), "format": "BGR888"}
    assert cam.config_args["lores"] == {"size": (320, 180), "format": "YUV420"}
    assert cam.config_args["controls"] == {"FrameRate": 15.0}
    assert src.name == "picamera2:0 (imx708)" and cam.started == 1
    fr = src.read(1.0)
    assert fr is not None and fr.main.shape == (720, 1280, 3)
    assert np.abs(fr.lores.astype(int) - rgb).mean() < 3
    assert good.released == 1
    with pytest.raises(CameraError, match="buffer gone"):
        src.read(1.0)
    assert broken.released == 1  # released in the finally, even when reading it failed
    assert src.read(0.01) is None  # timed out: the job is kept, not abandoned
    assert src.read(0.01) is None and cam.jobs == []  # ... and no second job was queued
    pending.ready = True
    src.close()
    src.close()
    assert late.released == 1  # the late request went back to the camera
    assert (cam.stopped, cam.closed) == (1, 1)


def test_a_camera_that_fails_to_configure_is_closed() -> None:
    cam = FakePicamera2(0)

    def bad_configure(config: dict[str, Any]) -> None:
        raise RuntimeError("Failed to configure camera")

    cam.configure = bad_configure  # type: ignore[method-assign]
    src = Picamera2Source(main_size=(1280, 720), lores_size=(320, 180), fps=15.0,
                          factory=lambda n: cam)
    with pytest.raises(CameraError, match="configure"):
        src.open()
    assert cam.closed == 1


def test_no_picamera2_is_a_camera_error_not_an_import_error(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import builtins

    real_import = builtins.__import__

    def no_picamera2(name: str, *a: Any, **kw: Any) -> Any:
        if name == "picamera2":
            raise ImportError("No module named 'picamera2'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_picamera2)
    with pytest.raises(CameraError, match="python3-picamera2"):
        sources.load_picamera2()
    assert sources.picamera2_cameras() == []


def test_importing_the_camera_package_imports_no_camera_library() -> None:
    import subprocess
    import sys

    code = ("import sys, edgeguard.camera.loop, edgeguard.camera.sources; "
            "print(sorted(m for m in ('picamera2', 'libcamera') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
