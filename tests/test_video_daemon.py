"""System tests: videos dropped into the real daemon's inbox on a real tmpfs.

The real `edgeguard run` process, real inotify, the real models and PyAV; the videos are
made here from scikit-image's astronaut with a generated tone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import video as hv
from helpers.daemon import (
    REPO,
    require_models,
    running,
    shm_dir,
    start_daemon,
    wait_for,
)

from edgeguard.sources.spool import spool_for

pytestmark = pytest.mark.system


@pytest.fixture(scope="module", autouse=True)
def _models_present() -> None:
    require_models()


@pytest.fixture
def work() -> Iterator[Path]:
    root = shm_dir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _config(work: Path) -> Path:
    path = work / "edgeguard.toml"
    path.write_text("[daemon]\n"
                    f"inbox = {json.dumps(str(work / 'inbox'))}\n"
                    f"outbox = {json.dumps(str(work / 'outbox'))}\n"
                    f"failed = {json.dumps(str(work / 'failed'))}\n"
                    "stable_s = 0.3\nworkers = 2\n")
    return path


def _drop(work: Path, name: str, data: bytes) -> None:
    staging = work / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(data)
    os.rename(staging / name, work / "inbox" / name)


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _waiting(work: Path) -> set[str]:
    """Inputs not yet ended: in the inbox, or claimed into the daemon's spool."""
    return _names(work / "inbox") | _names(spool_for(work / "inbox"))


def _video(path: Path, frames: int, astronaut: np.ndarray) -> hv.Scene:
    scene = hv.moving_scene(frames)
    hv.write_video(path, hv.render(scene, astronaut), fmt="mp4", audio_s=frames / 15.0,
                   metadata={"location": "+48.8577+002.2950/"})
    return scene


def test_videos_and_hostile_videos_each_end_as_one_output_or_one_failure(
        work: Path, astronaut_rgb: np.ndarray) -> None:
    made = work / "made"
    made.mkdir()
    scene = _video(made / "good.mp4", 30, astronaut_rgb)
    good = (made / "good.mp4").read_bytes()
    hv.long_header_short_data(made / "long.mp4")
    hv.audio_only(made / "sound.mp4")
    hv.huge_resolution(made / "huge.mkv")
    hostile = {
        "empty.mp4": b"",
        "truncated.mp4": good[: len(good) // 2],
        "long.mp4": (made / "long.mp4").read_bytes(),
        "corrupt.mp4": hv.corrupt_middle(good),
        "sound.mp4": (made / "sound.mp4").read_bytes(),
        "huge.mkv": (made / "huge.mkv").read_bytes(),
    }
    with running(["--config", str(_config(work))], workdir=work) as d:
        _drop(work, "good.mp4", good)
        for name, data in hostile.items():
            _drop(work, name, data)
        wait_for(lambda: not _waiting(work) and "good.mp4" in _names(work / "outbox"),
                 120, f"every video settled\n{d.output()}")
        assert _names(work / "outbox") == {"good.mp4"}  # no temporary file left either
        failed = _names(work / "failed")
        assert failed == set(hostile) | {f"{n}.reason" for n in hostile}
        reasons = {n: (work / "failed" / f"{n}.reason").read_text().splitlines()[0]
                   for n in hostile}
        assert reasons["empty.mp4"] == "empty file"
        assert "not a readable video" in reasons["truncated.mp4"]
        assert "1:00:00 long" in reasons["long.mp4"]
        assert "video data" in reasons["corrupt.mp4"]
        assert "audio-only" in reasons["sound.mp4"]
        assert "frame size" in reasons["huge.mkv"]
        assert all("Traceback" not in r and "internal error" not in r
                   for r in reasons.values())
        assert "Traceback" not in d.output()
        assert d.stop() == 0
    before, after = hv.read_video(made / "good.mp4"), hv.read_video(work / "outbox/good.mp4")
    assert len(after.frames) == len(before.frames) == 30
    assert after.pts == before.pts and after.audio == before.audio
    assert b"48.8577" not in (work / "outbox/good.mp4").read_bytes()
    for n, (a, b) in enumerate(zip(before.frames, after.frames, strict=True)):
        x1, y1, x2, y2 = scene.face_box(n)
        changed = np.abs(b[y1:y2, x1:x2].astype(np.int16) - a[y1:y2, x1:x2]).mean()
        assert changed > 8.0, f"frame {n}: face not covered"


def test_kill_9_or_sigterm_during_a_video_redo_it_from_the_start_and_status_shows_progress(
        work: Path, astronaut_rgb: np.ndarray) -> None:
    made = work / "made"
    made.mkdir()
    frames = 150
    _video(made / "long-clip.mp4", frames, astronaut_rgb)
    cfg = _config(work)
    state = work / "state.json"

    def progress() -> list[dict[str, object]]:
        try:
            videos: list[dict[str, object]] = json.loads(state.read_text()).get("videos", [])
        except (OSError, ValueError):
            return []
        return videos

    d = start_daemon(["--config", str(cfg)], workdir=work)
    try:
        d.wait_ready()
        _drop(work, "clip.mp4", (made / "long-clip.mp4").read_bytes())
        wait_for(lambda: any(int(str(v["frames_done"])) >= 10 for v in progress()), 120,
                 f"video progress in the state file\n{d.output()}")
        snap = progress()[0]
        assert snap["name"] == "clip.mp4" and snap["frames_total"] == frames
        shown = subprocess.run([sys.executable, "-m", "edgeguard", "status", "--config",
                                str(cfg)], cwd=REPO, capture_output=True, text=True,
                               check=False).stdout
        assert "video in progress: clip.mp4: " in shown and f"/{frames} frames" in shown
        assert "ETA" in shown
        d.kill9()
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        d.notify.close()
    # Killed mid-video: nothing published, the raw file still in the inbox.
    assert not [n for n in _names(work / "outbox") if not n.startswith(".edgeguard-")]
    assert _waiting(work) == {"clip.mp4"}
    # SIGTERM mid-video: the drain stops it at the next frame, exits 0, publishes nothing.
    with running(["--config", str(cfg)], workdir=work) as d2:
        wait_for(lambda: any(int(str(v["frames_done"])) >= 5 for v in progress()), 120,
                 f"video progress after the restart\n{d2.output()}")
        assert d2.stop() == 0
    assert not [n for n in _names(work / "outbox") if not n.startswith(".edgeguard-")]
    assert _waiting(work) == {"clip.mp4"}
    with running(["--config", str(cfg)], workdir=work) as d3:
        wait_for(lambda: "clip.mp4" in _names(work / "outbox") and not _waiting(work),
                 180, f"the video redone after the restarts\n{d3.output()}")
        assert d3.stop() == 0
    assert _names(work / "outbox") == {"clip.mp4"}  # the partial temporary file is gone
    assert _names(work / "failed") == set()
    out = hv.read_video(work / "outbox/clip.mp4")
    assert len(out.frames) == frames
    assert out.pts == hv.read_video(made / "long-clip.mp4").pts
