"""The real daemon with a camera: `edgeguard run` with a `file:` camera of moving faces, a
real tmpfs inbox, `edgeguard snap` and `edgeguard status` against it, SIGTERM at the end.

Skipped until the daemon runs cameras (Daemon takes a ``camera``); see docs/camera.md."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.camera import Scene, moving_faces, read_video, similarity
from helpers.daemon import REPO, running, shm_dir, wait_for
from helpers.images import decode

pytestmark = pytest.mark.system


def daemon_runs_cameras() -> bool:
    from edgeguard.daemon import Daemon

    return "camera" in inspect.signature(Daemon.__init__).parameters


def no_raw_face(out: np.ndarray, scene: Scene, frames: range) -> bool:
    return all(similarity(out, scene.frames[j], box) < 0.6
               for j in frames for box in scene.faces[j])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeguard", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_daemon_runs_the_camera(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    if not daemon_runs_cameras():
        pytest.skip("the daemon does not run the camera yet")
    scene = moving_faces(astronaut_rgb, n=24, fps=8.0)
    frames = scene.write(tmp_path / "frames")
    shm = shm_dir()
    outbox = tmp_path / "outbox"
    cfg = tmp_path / "edgeguard.toml"
    cfg.write_text(f"""
[daemon]
inbox = "{shm}/inbox"
outbox = "{outbox}"
[camera]
source = "file:{frames}"
fps = 8.0
video = true
segment_s = 1.0
still_interval_s = 1.0
max_frame_age_s = 30.0
""")
    state = shm / "state.json"

    def camera() -> dict[str, object]:
        try:
            return json.loads(state.read_text()).get("camera") or {}  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    try:
        with running(["--config", str(cfg)], workdir=tmp_path) as d:
            snap = cli("snap", "--config", str(cfg))
            assert snap.returncode == 0 and "asked the daemon" in snap.stdout, snap
            wait_for(lambda: camera().get("state") == "ended", 60, "the file camera to end")
            # The snap's still and at least one interval still (a snap that lands on an
            # interval frame gives one still for both; a busy still worker skips one).
            wait_for(lambda: camera().get("stills", 0) >= 2, 30, "the stills")
            status = cli("status", "--config", str(cfg))
            assert "camera: file:" in status.stdout, status.stdout
            assert d.stop() == 0, d.output()
    finally:
        shutil.rmtree(shm, ignore_errors=True)

    names = sorted(p.name for p in outbox.iterdir())
    assert not [n for n in names if n.startswith(".")], names
    videos = [outbox / n for n in names if n.endswith(".mp4")]
    stills = [outbox / n for n in names if n.endswith(".jpg")]
    assert len(videos) >= 2 and len(stills) >= 2, names
    slot = 0
    for v in videos:  # consecutive segments: slot k shows source frame k or an earlier one
        for out in read_video(v):
            assert no_raw_face(out, scene, range(min(slot, 23), min(slot, 23) + 1)), (v, slot)
            slot += 1
    for s in stills:
        assert no_raw_face(decode(s.read_bytes()), scene, range(24)), s.name
