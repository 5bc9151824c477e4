"""Video segments through this machine's real OpenCV writer: formats, atomic publication,
segment rotation on stream time, a real-speed timeline, and the disk quota."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.camera import read_video

from edgeguard.camera import video
from edgeguard.camera.video import SegmentWriter
from edgeguard.sinks.fileops import TMP_PREFIX, sweep_leftovers

SIZE = (160, 96)


def frame(value: int) -> np.ndarray:
    f = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    f[..., 0] = value  # red channel carries the frame's number
    f[..., 1] = 60
    return f


def red(rgb: np.ndarray) -> float:
    return float(rgb[..., 0].mean())


def writer(folder: Path, fmt: str = "mp4", **kw: Any) -> SegmentWriter:
    args: dict[str, Any] = {"fps": 10.0, "size": SIZE, "fmt": fmt, "segment_s": 60.0,
                            "quota_bytes": 1 << 30} | kw
    return SegmentWriter(folder, **args)


@pytest.mark.parametrize("fmt", ["mp4", "mkv"])
def test_this_opencv_build_writes_both_formats(tmp_path: Path, fmt: str) -> None:
    w = writer(tmp_path, fmt)
    for i in range(5):
        w.write(frame(40 * i), i / 10)
    hidden = [p.name for p in tmp_path.iterdir()]
    assert len(hidden) == 1 and hidden[0].startswith(TMP_PREFIX) and hidden[0].endswith(fmt)
    path = w.close()
    assert path is not None and path.suffix == f".{fmt}" and video.FINAL_RE.match(path.name)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    got = read_video(path)
    assert [round(red(g) / 40) for g in got] == [0, 1, 2, 3, 4]
    assert w.close() is None  # idempotent


def test_segments_rotate_on_stream_time(tmp_path: Path) -> None:
    clock = iter(range(1_700_000_000, 1_700_000_100, 7))
    w = writer(tmp_path, segment_s=1.0, wall=lambda: float(next(clock)))
    for i in range(25):
        w.write(frame(100), i / 10)
    w.close()
    files = sorted(tmp_path.iterdir())
    assert [len(read_video(p)) for p in files] == [10, 10, 5]
    assert w.segments == 3


def test_the_timeline_holds_the_last_frame_over_gaps(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.write(frame(0), 0.0)
    w.write(frame(80), 0.1)
    w.write(frame(160), 0.5)  # slots 2-4 were never filled by the loop
    w.write(frame(240), 0.51)  # same slot as the previous frame: not written twice
    w.blank(0.6)
    path = w.close()
    assert path is not None
    got = [round(red(g) / 40) * 40 for g in read_video(path)]
    assert got == [0, 80, 80, 80, 80, 160, 0]


def test_a_writer_that_cannot_open_pauses_video_until_the_next_segment(tmp_path: Path) -> None:
    calls: list[str] = []

    class Closed:
        def __init__(self, path: str, *a: Any) -> None:
            calls.append(path)

        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    w = writer(tmp_path, segment_s=1.0, writer_factory=Closed)
    for i in range(15):
        w.write(frame(1), i / 10)
    assert len(calls) == 2  # tried at t=0, then again a segment later at t=1.0
    assert w.failures == 2 and "cannot start" in (w.last_error or "")
    assert w.close() is None and list(tmp_path.iterdir()) == []


def test_quota_removes_the_oldest_camera_videos_only(tmp_path: Path) -> None:
    now = time.time()
    names = ["cam-20250101-000000.mp4", "cam-20250101-000100.mkv", "cam-20250101-000200.mp4",
             "cam-20250101-000300-1.mp4"]
    for age, name in zip((400, 300, 200, 100), names, strict=True):
        p = tmp_path / name
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - age, now - age))
    other = tmp_path / "holiday.mp4"  # not ours: never touched
    other.write_bytes(b"x" * 5000)
    os.utime(other, (now - 1000, now - 1000))
    removed = video.enforce_quota(tmp_path, 2500)
    assert [p.name for p in removed] == names[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[2:], "holiday.mp4"])


def test_the_quota_runs_after_each_segment(tmp_path: Path) -> None:
    stamps = iter(float(1_700_000_000 + 60 * i) for i in range(10))
    w = writer(tmp_path, segment_s=0.5, quota_bytes=1, wall=lambda: next(stamps))
    for i in range(15):
        w.write(frame(50), i / 10)
    w.close()
    assert w.segments == 3
    assert len(list(tmp_path.iterdir())) == 0  # a 1-byte quota keeps nothing published


def test_an_unfinished_segment_from_a_crash_is_swept(tmp_path: Path) -> None:
    w = writer(tmp_path)
    for i in range(5):
        w.write(frame(40 * i), i / 10)
    # A crash now leaves the open segment under its temporary name: the daemon's sweep at
    # the next start removes it, and nothing else.
    published = tmp_path / "cam-20250101-000000.mp4"
    published.write_bytes(b"x")
    assert sweep_leftovers(tmp_path) == 1
    assert list(tmp_path.iterdir()) == [published]


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        writer(tmp_path, "avi")
