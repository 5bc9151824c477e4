"""Videos: the pure parts (sniffing, the temporal hold, names, progress) on values, and the
real thing on short videos made here from scikit-image's astronaut with a generated tone:
the real PyAV/FFmpeg, the real TFLite models, the real file search on every frame."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from helpers import video as hv
from helpers.daemon import require_models

from edgeguard.config import Config, VideoConfig
from edgeguard.errors import InputError
from edgeguard.geometry import Box
from edgeguard.pipeline import Pipeline
from edgeguard.video import sniff
from edgeguard.video.hold import Hold
from edgeguard.video.item import Meter, describe, write_new_video
from edgeguard.video.probe import output_name
from edgeguard.video.transcode import VideoResult

SECRETS = {"location": "+48.8577+002.2950/", "make": "SecretPhoneMaker",
           "model": "SecretModel 7", "title": "my secret title",
           "creation_time": "2024-05-06T07:08:09Z"}
# What a muxer writes about itself and the file's structure: no user data.
STRUCTURAL = {"major_brand", "minor_version", "compatible_brands", "encoder", "ENCODER",
              "software"}

# -- pure parts --------------------------------------------------------------------------------


def test_sniff_names_video_containers_and_nothing_else() -> None:
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") == "mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == "mov"
    assert sniff(b"\x00\x00\x00\x08wide\x00\x00\x00\x00") == "mov"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01B\x82\x84webm") == "webm"
    assert sniff(b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01B\x82\x88matroska") == "matroska"
    assert sniff(b"RIFF\x00\x10\x00\x00AVI LIST") == "avi"
    # Still images in ISO media, and everything else, stay with the image decoder.
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") is None
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00") is None
    assert sniff(b"RIFF\x00\x10\x00\x00WEBPVP8 ") is None
    assert sniff(b"\xff\xd8\xff\xe0") is None
    assert sniff(b"") is None


def _covered(hold: Hold[int], found: dict[int, list[Box]], frames: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for n in range(frames):
        for item, boxes in hold.push(n, n / 10.0, found.get(n, [])):
            out[item] = len(boxes)
    for item, boxes in hold.flush():
        out[item] = len(boxes)
    return out


def test_the_hold_covers_a_face_frames_either_side_of_where_it_was_found() -> None:
    face = Box(100, 100, 140, 150)
    covered = _covered(Hold(frames=2, frame_s=0.1), {5: [face]}, 12)
    assert sorted(covered) == list(range(12))  # every frame comes out, in order, once
    assert [n for n, k in covered.items() if k] == [3, 4, 5, 6, 7]


def test_the_hold_moves_with_the_face_and_grows_back_in_time() -> None:
    hold: Hold[int] = Hold(frames=2, frame_s=0.1)
    out = []
    for n in range(8):
        found = [Box(10 * n, 0, 10 * n + 40, 40)] if n in (4, 5) else []
        out += hold.push(n, n / 10.0, found)
    out += hold.flush()
    boxes = dict(out)
    # Before: the first sighting copied back, grown; after: predicted along the motion.
    assert boxes[2][0].width > boxes[3][0].width > 40
    assert boxes[7] and max(b.x2 for b in boxes[7]) > 90


def test_the_hold_follows_a_fast_small_face_back_to_before_it_was_first_found() -> None:
    """A 24 px face crossing 20 px per frame, found only from frame 5 on: the frames
    before are covered where the face really was, not where it was first seen."""
    def true_box(n: int) -> Box:
        return Box(100 + 20 * n, 50, 124 + 20 * n, 74)

    hold: Hold[int] = Hold(frames=3, frame_s=1 / 15)
    out = []
    for n in range(10):
        out += hold.push(n, n / 15, [true_box(n)] if n >= 5 else [])
    out += hold.flush()
    for n, boxes in out:
        if n < 2:
            assert not boxes
            continue
        face = true_box(n)
        assert any(b.x1 <= face.x1 and b.x2 >= face.x2 and b.y1 <= face.y1
                   and b.y2 >= face.y2 for b in boxes), f"frame {n}"


def test_no_hold_passes_frames_straight_through() -> None:
    covered = _covered(Hold(frames=0, frame_s=0.1), {5: [Box(0, 0, 9, 9)]}, 8)
    assert [n for n, k in covered.items() if k] == [5]


def test_output_names_keep_the_suffix_or_name_the_container() -> None:
    assert output_name(Path("a/clip.MP4"), "mp4") == Path("a/clip.MP4")
    assert output_name(Path("clip.mov"), "mov") == Path("clip.mov")
    assert output_name(Path("clip.webm"), "webm") == Path("clip.mkv")
    assert output_name(Path("clip.avi"), "avi") == Path("clip.avi")
    assert output_name(Path("clip.mp4"), "mov") == Path("clip.mov")
    assert output_name(Path("clip"), "matroska") == Path("clip.mkv")


def test_progress_shows_frames_rate_and_time_left() -> None:
    now = [100.0]
    meter = Meter("clip.mp4", clock=lambda: now[0])
    now[0] = 110.0
    meter.update(50, 200)
    snap = meter.snapshot()
    assert snap == {"name": "clip.mp4", "frames_done": 50, "frames_total": 200, "fps": 5.0,
                    "eta_s": 30.0}
    assert describe(snap) == "clip.mp4: 50/200 frames, 5.0 fps, ETA 30 s"
    meter.update(60, None)
    assert describe(meter.snapshot()) == "clip.mp4: 60 frames, 6.0 fps"


# -- the real thing ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    require_models()
    return Pipeline(Config())


def _with(pipe: Pipeline, **video: object) -> Pipeline:
    out = {k: video.pop(k) for k in list(video) if k == "video_audio"}
    cfg = dataclasses.replace(pipe.cfg, video=dataclasses.replace(pipe.cfg.video, **video),
                              output=dataclasses.replace(pipe.cfg.output, **out))
    return pipe.with_config(cfg)


def _redact(pipe: Pipeline, src: Path, dst: Path) -> VideoResult:
    kind = sniff(src.read_bytes()[:64])
    assert kind is not None
    return write_new_video(src, dst, kind=kind, search=pipe, progress=lambda d, t: None)


def _face_covered(before: np.ndarray, after: np.ndarray, box: tuple[int, ...]) -> bool:
    """Every quarter of the face box changed well beyond re-encoding noise."""
    x1, y1, x2, y2 = box
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    quarters = [(x1, y1, mx, my), (mx, y1, x2, my), (x1, my, mx, y2), (mx, my, x2, y2)]
    return all(
        np.abs(after[b:d, a:c].astype(np.int16) - before[b:d, a:c]).mean() > 8.0
        for a, b, c, d in quarters)


@pytest.fixture(scope="module")
def scene() -> hv.Scene:
    return hv.moving_scene(24)


@pytest.fixture(scope="module")
def raw_frames(scene: hv.Scene, astronaut_rgb: np.ndarray) -> list[np.ndarray]:
    return list(hv.render(scene, astronaut_rgb))


@pytest.mark.parametrize("fmt", ["mp4", "mov", "matroska", "webm", "avi"])
def test_a_video_comes_out_redacted_in_every_frame_with_its_audio_and_timing(
        fmt: str, pipe: Pipeline, scene: hv.Scene, raw_frames: list[np.ndarray],
        tmp_path: Path) -> None:
    src, dst = tmp_path / f"in.{fmt}", tmp_path / "out"
    hv.write_video(src, raw_frames, fmt=fmt, audio_s=1.6, metadata=SECRETS)
    result = _redact(pipe, src, dst)
    before, after = hv.read_video(src), hv.read_video(dst)
    assert after.codec == "h264"
    assert after.kinds == ["video", "audio"]
    assert len(after.frames) == len(before.frames) == len(raw_frames) == result.frames
    assert after.audio == before.audio and len(after.audio) > 10  # packets, byte for byte
    if fmt == "avi":  # AVI has no timestamps of its own: compare what its header says
        assert hv.header_timing(dst) == hv.header_timing(src)
    else:
        assert after.pts == before.pts
        assert after.duration_s == pytest.approx(before.duration_s, abs=1e-6)
    kept = 0
    for n, (a, b) in enumerate(zip(before.frames, after.frames, strict=True)):
        assert _face_covered(a, b, scene.face_box(n)), f"frame {n}: face not covered"
        kept += np.abs(b[2:10].astype(np.int16) - a[2:10]).mean() < 8.0
    # Not everything is blurred: the background stripe comes out as it went in, in all but
    # a few frames (low scores are redacted too, to be safe, and held like faces).
    assert kept >= 0.8 * len(after.frames)
    # Metadata: none of the input's items, in the container's tags or anywhere in the bytes.
    assert set(after.metadata) <= STRUCTURAL
    data = dst.read_bytes()
    for value in SECRETS.values():
        assert value.encode() not in data
    assert set(before.metadata) - STRUCTURAL  # (the input did carry them)


def test_audio_can_be_dropped(pipe: Pipeline, raw_frames: list[np.ndarray],
                              tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    hv.write_video(src, raw_frames[:6], fmt="mp4", audio_s=0.5)
    result = _redact(_with(pipe, video_audio="drop"), src, tmp_path / "out")
    assert hv.read_video(tmp_path / "out").kinds == ["video"]
    assert result.audio_packets == 0


def test_creation_time_kept_only_when_allowed(pipe: Pipeline, raw_frames: list[np.ndarray],
                                              tmp_path: Path) -> None:
    src = tmp_path / "in.mkv"
    hv.write_video(src, raw_frames[:4], fmt="matroska", metadata=SECRETS)
    _redact(_with(pipe, keep_metadata=("creation_time",)), src, tmp_path / "out")
    meta = hv.read_video(tmp_path / "out").metadata
    assert meta.get("creation_time", "").startswith("2024-05-06T07:08:09")
    assert set(meta) - STRUCTURAL == {"creation_time"}


def test_rotation_is_applied_to_the_pixels(pipe: Pipeline, astronaut_rgb: np.ndarray,
                                           tmp_path: Path) -> None:
    upright = np.full((256, 384, 3), 90, np.uint8)
    upright[:, :256] = astronaut_rgb[::2, ::2]
    stored = np.ascontiguousarray(np.rot90(upright))  # a phone stores it turned...
    src = tmp_path / "in.mp4"
    hv.write_video(src, [stored] * 6, fmt="mp4", rotation=-90)  # ...and says how to turn it
    result = _redact(pipe, src, tmp_path / "out")
    after = hv.read_video(tmp_path / "out")
    assert result.rotation == 90
    assert after.frames[0].shape == upright.shape
    for frame in after.frames:
        assert _face_covered(upright, frame, (83, 30, 133, 95))  # the face, upright
        assert np.abs(frame[:, 270:].astype(np.int16) - upright[:, 270:]).mean() < 4.0
    import av  # no display matrix left to turn it a second time

    with av.open(str(tmp_path / "out")) as c:
        assert next(c.decode(video=0)).rotation == 0


# -- hostile videos: one failure with a reason, nothing written ------------------------------


def _refused(pipe: Pipeline, src: Path, tmp_path: Path) -> str:
    dst = tmp_path / "out"
    with pytest.raises(InputError) as info:
        _redact(pipe, src, dst)
    assert not dst.exists()
    reason = str(info.value)
    assert reason and "\n" not in reason and str(src) not in reason
    return reason


def test_a_60_minute_header_with_1_s_of_data_is_refused(pipe: Pipeline, tmp_path: Path) -> None:
    src = tmp_path / "long.mp4"
    hv.long_header_short_data(src)
    assert "1:00:00 long" in _refused(pipe, src, tmp_path)
    # Allowed that long, it fails as what it is: the data stops (mid-frame here, else a
    # frame count short of the header's).
    reason = _refused(_with(pipe, max_seconds=7200.0), src, tmp_path)
    assert "unreadable after frame" in reason or "ends early" in reason


def test_truncated_and_corrupt_videos_are_refused(pipe: Pipeline, raw_frames: list[np.ndarray],
                                                  tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    hv.write_video(good, raw_frames, fmt="mp4", audio_s=1.6)
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    assert "not a readable video" in _refused(pipe, tmp_path / "cut.mp4", tmp_path)
    (tmp_path / "bad.mp4").write_bytes(hv.corrupt_middle(data))
    assert "video data" in _refused(pipe, tmp_path / "bad.mp4", tmp_path)


def test_audio_only_and_huge_frames_are_refused(pipe: Pipeline, tmp_path: Path) -> None:
    hv.audio_only(tmp_path / "sound.mp4")
    assert "audio-only" in _refused(pipe, tmp_path / "sound.mp4", tmp_path)
    hv.huge_resolution(tmp_path / "huge.mkv")
    assert "frame size" in _refused(pipe, tmp_path / "huge.mkv", tmp_path)
    big = tmp_path / "big.mkv"
    hv.write_video(big, [np.zeros((1216, 1920, 3), np.uint8)] * 2, fmt="matroska")
    assert "video.max_pixels" in _refused(pipe, big, tmp_path)
    assert "video.max_total_pixels" in _refused(
        _with(pipe, max_pixels=3_000_000, max_total_pixels=1920 * 1216), big, tmp_path)


def test_limits_default_to_1080p_and_half_an_hour() -> None:
    v = VideoConfig()
    assert 1920 * 1080 <= v.max_pixels < 2560 * 1440
    assert v.max_seconds == 1800.0
