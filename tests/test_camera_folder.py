"""A `file:` folder of images of different sizes: each picture stands alone (issue 13).

Before: the video squashed every image to the first one's size, and the tracker carried a
face's region from one image onto the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from helpers.camera import background, read_video
from helpers.daemon import PATIENCE

from edgeguard import config
from edgeguard.camera.loop import CameraService, World
from edgeguard.camera.video import letterbox
from edgeguard.pipeline import Pipeline


def play(cfg: config.Config, outbox: Path) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The folder through the camera service, unpaced: its status and the video's frames."""
    outbox.mkdir()
    svc = CameraService(cfg, Pipeline(cfg), outbox, world=World(paced=False))
    svc.start()
    svc.join(60 * PATIENCE)
    svc.stop()
    return svc.status(), read_video(next(outbox.glob("cam-*.mkv")))


def test_letterbox_keeps_the_proportions() -> None:
    img = np.full((500, 375, 3), 200, np.uint8)  # a portrait photo
    out = letterbox(img, (1280, 720))
    assert out.shape == (720, 1280, 3)
    cols = np.flatnonzero(out[360].max(axis=1) > 0)
    assert abs((cols[-1] - cols[0] + 1) - round(375 * 720 / 500)) <= 1  # 540 wide, not 1280
    assert out[:, :300].max() == 0 and out[:, -300:].max() == 0


def test_regions_do_not_carry_from_one_image_to_the_next(tmp_path: Path,
                                                         astronaut_rgb: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    # 1: the astronaut (a face at the top left); 2: a wall, another size, no face
    cv2.imwrite(str(folder / "1.png"), cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR))
    wall = background(640, 480, seed=3)
    cv2.imwrite(str(folder / "2.png"), cv2.cvtColor(wall, cv2.COLOR_RGB2BGR))
    cfg = config.from_dict({"camera": {"source": f"file:{folder}", "fps": 2.0,
                                       "video": True, "video_format": "mkv",
                                       "max_frame_age_s": 60.0}})
    st, frames = play(cfg, tmp_path / "out")
    assert st["failed"] == 0
    assert len(frames) == 2
    assert frames[0].shape == (512, 512, 3)  # the video takes the first picture's size
    expected = cv2.cvtColor(letterbox(cv2.cvtColor(wall, cv2.COLOR_RGB2BGR), (512, 512)),
                            cv2.COLOR_BGR2RGB)
    diff = np.abs(frames[1].astype(int) - expected.astype(int)).max(axis=2)
    # nothing of the astronaut's face region redacted on the wall (JPEG noise only)
    assert np.percentile(diff, 99.9) < 40, np.percentile(diff, 99.9)


def test_each_image_of_a_folder_stands_alone(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    """Two images of the same size, the first with a face where the second has none: the
    second comes out with nothing redacted there (no tracker, motion or bracket state
    carries from one image to the next; before, the tracker's region persisted onto it)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    wall = background(512, 512, seed=5)
    cv2.imwrite(str(folder / "1.png"), cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "2.png"), cv2.cvtColor(wall, cv2.COLOR_RGB2BGR))
    cfg = config.from_dict({"redact": {"mode": "solid", "shape": "box"},
                            "camera": {"source": f"file:{folder}", "fps": 2.0,
                                       "video": True, "video_format": "mkv",
                                       "max_frame_age_s": 60.0}})
    st, (first, second) = play(cfg, tmp_path / "out")
    assert (st["failed"], st["written"], st["searched"]) == (0, 2, 2)
    face = (slice(80, 160), slice(180, 270))  # the astronaut's face, inside BlazeFace's box
    assert first[face].max() < 40  # redacted solid black
    diff = np.abs(second.astype(int) - wall.astype(int)).max(axis=2)
    assert diff[face].max() < 40, diff[face].max()  # the wall as it was: nothing carried
