"""Privacy masks: fixed polygons always redacted in the camera's video and stills."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.camera import background, moving_faces, read_video
from helpers.daemon import PATIENCE

from edgeguard import config
from edgeguard.camera import masks
from edgeguard.camera.loop import CameraService, World
from edgeguard.camera.status import render_status
from edgeguard.errors import ConfigError, StartupError
from edgeguard.pipeline import Pipeline

TRIANGLE = ((600, 40), (900, 40), (900, 300))


def test_check_names_the_bad_mask() -> None:
    masks.check([TRIANGLE], 1280, 720)
    with pytest.raises(ValueError, match=r"masks\[1\]: .*at least 3 points"):
        masks.check([TRIANGLE, ((0, 0), (5, 5))], 1280, 720)
    with pytest.raises(ValueError, match=r"masks\[0\]: point \(1280, 5\) is outside the "
                                         r"1280x720 frame"):
        masks.check([((0, 0), (1280, 5), (5, 5))], 1280, 720)
    with pytest.raises(ValueError, match="no area"):
        masks.check([((0, 0), (5, 5), (10, 10))], 1280, 720)


def test_config_refuses_a_polygon_of_two_points() -> None:
    with pytest.raises(ConfigError, match=r"camera.masks\[0\]"):
        config.from_dict({"camera": {"masks": [[[0, 0], [10, 0]]]}})


@pytest.mark.parametrize("mode", ["solid", "blur", "pixelate"])
def test_apply_changes_the_polygon_and_nothing_else(mode: str) -> None:
    img = background(1280, 720)
    out = img.copy()
    masks.apply(out, [TRIANGLE], mode=mode, color=(255, 0, 255))
    m = np.zeros((720, 1280), np.uint8)
    cv2.fillPoly(m, [np.array(TRIANGLE, np.int32)], 1)
    inside = m.astype(bool)
    assert np.array_equal(out[~inside], img[~inside])
    changed = np.abs(out.astype(int) - img.astype(int)).max(axis=2) > 0
    assert changed[inside].mean() > 0.9
    if mode == "solid":
        assert (out[inside] == (255, 0, 255)).all()


def run(tmp_path: Path, cfg: config.Config) -> CameraService:
    outbox = tmp_path / "out"
    outbox.mkdir(exist_ok=True)
    svc = CameraService(cfg, Pipeline(cfg), outbox, world=World(paced=False))
    svc.start()
    svc.join(60 * PATIENCE)
    svc.stop()
    return svc


def test_masks_in_every_video_frame_and_still(tmp_path: Path,
                                              astronaut_rgb: np.ndarray) -> None:
    scene = moving_faces(astronaut_rgb, n=8, fps=8.0)
    frames = scene.write(tmp_path / "frames")
    cfg = config.from_dict({
        "redact": {"mode": "solid", "color": [255, 0, 255], "shape": "box"},
        "camera": {"source": f"file:{frames}", "fps": 8.0, "video": True,
                   "video_format": "mkv", "max_frame_age_s": 60.0, "still_interval_s": 0.5,
                   "masks": [list(map(list, TRIANGLE))]}})
    svc = run(tmp_path, cfg)
    st = svc.status()
    assert st["failed"] == 0 and st["stills"] >= 1
    assert "camera privacy mask 0: 600,40 900,40 900,300" in render_status(st)
    m = np.zeros((720, 1280), np.uint8)
    cv2.fillPoly(m, [np.array(TRIANGLE, np.int32)], 1)
    core = cv2.erode(m, np.ones((5, 5), np.uint8)).astype(bool)  # off the JPEG-blurred edge
    outs = read_video(next((tmp_path / "out").glob("cam-*.mkv")))
    stills = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in (tmp_path / "out").glob("cam-*.jpg")]
    assert len(outs) == 8 and stills
    for out in [*outs, *stills]:
        assert np.abs(out[core].astype(int) - (255, 0, 255)).max(axis=1).mean() < 12


def test_a_mask_outside_the_frame_stops_the_camera(tmp_path: Path,
                                                   astronaut_rgb: np.ndarray) -> None:
    scene = moving_faces(astronaut_rgb, n=2, fps=8.0)
    frames = scene.write(tmp_path / "frames")
    cam = {"source": f"file:{frames}", "masks": [[[0, 0], [2000, 0], [0, 100]]]}
    svc = run(tmp_path, config.from_dict({"camera": cam}))
    assert svc.state == "failed" and "<dict>: camera.masks[0]: point (2000, 0) is outside " \
        "the 1280x720" in (svc.last_error or "")  # the config file named, like its other errors
    assert not list((tmp_path / "out").iterdir())
    with pytest.raises(StartupError, match=r"masks\[0\]"):
        run(tmp_path, config.from_dict({"camera": cam | {"require": True}}))
