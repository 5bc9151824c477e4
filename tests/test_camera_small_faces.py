"""A small face in the camera's video is covered in every written frame (issue 13).

Ground truth built from an image a fresh clone has: scikit-image's astronaut, her head
scaled so the face is about 24 main pixels tall (about 7 pixels of the 384x216 lores
frame, under what the detector finds there), one standing still from the first frame and
one moving across a 1280x720 frame. The real pipeline, models and video writer; every
written frame is compared with its input, face by face. The control runs the lores-only
search the camera had before (``search = "lores"``, no bracket): it leaks these faces,
so the test can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.camera import Scene, is_redacted, moving_faces, read_video
from helpers.daemon import PATIENCE

from edgeguard import config
from edgeguard.camera.loop import CameraService, World
from edgeguard.pipeline import Pipeline

N = 20
HEAD_PX = 52  # the inner face box is ~25 px tall


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline(config.Config())


@pytest.fixture(scope="module")
def scene(astronaut_rgb: np.ndarray) -> Scene:
    # one still, one walking slowly right (3 px a frame) with a little drift
    return moving_faces(astronaut_rgb, n=N, fps=10.0, head_px=HEAD_PX,
                        tracks=((900, 420, 0, 0), (150, 180, 3, 1)))


@pytest.fixture(scope="module")
def frames_dir(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene.write(tmp_path_factory.mktemp("small") / "frames")


def written(pipe: Pipeline, frames_dir: Path, outbox: Path, mode: str,
            **camera: object) -> list[np.ndarray]:
    cfg = config.from_dict({
        "redact": {"mode": mode},
        "camera": {"source": f"file:{frames_dir}", "fps": 10.0, "video": True,
                   "video_format": "mkv", "max_frame_age_s": 60.0} | camera})
    outbox.mkdir()
    svc = CameraService(cfg, pipe, outbox, world=World(paced=False))
    svc.start()
    svc.join(60 * PATIENCE)
    svc.stop()
    assert svc.status()["failed"] == 0
    videos = sorted(outbox.glob("cam-*.mkv"))
    assert len(videos) == 1, videos
    return read_video(videos[0])


def leaks(frames: list[np.ndarray], scene: Scene) -> list[tuple[int, tuple[int, ...]]]:
    assert len(frames) == N  # every camera frame written, none repeated or lost
    return [(i, box) for i, out in enumerate(frames) for box in scene.faces[i]
            if not is_redacted(out, scene.frames[i], box)]


def test_the_faces_are_small(scene: Scene) -> None:
    heights = {y2 - y1 for boxes in scene.faces for _, y1, _, y2 in boxes}
    assert max(heights) <= 26  # ~7 lores pixels


@pytest.mark.parametrize("mode", ["blur", "pixelate", "solid"])
def test_a_small_face_is_covered_in_every_written_frame(pipe: Pipeline, scene: Scene,
                                                        frames_dir: Path, tmp_path: Path,
                                                        mode: str) -> None:
    assert leaks(written(pipe, frames_dir, tmp_path / "out", mode), scene) == []


def test_the_lores_only_search_leaks_them(pipe: Pipeline, scene: Scene, frames_dir: Path,
                                          tmp_path: Path) -> None:
    found = leaks(written(pipe, frames_dir, tmp_path / "out", "blur", search="lores",
                          delay_frames=0), scene)
    assert len(found) >= N  # most face-frames of both faces
