"""The tracker alone: persistence, motion following, expiry, matching (pure, on boxes)."""

from __future__ import annotations

import pytest

from edgeguard.camera.tracker import Tracker
from edgeguard.geometry import Box


def box(x: float, y: float, size: float = 40.0) -> Box:
    return Box(x, y, x + size, y + size)


def contains(outer: Box, inner: Box) -> bool:
    return (outer.x1 <= inner.x1 and outer.y1 <= inner.y1
            and outer.x2 >= inner.x2 and outer.y2 >= inner.y2)


def covered(cover: list[Box], face: Box) -> bool:
    return any(contains(c, face) for c in cover)


def test_a_seen_face_is_covered_by_its_own_box() -> None:
    tr = Tracker(persist_s=1.0)
    assert tr.update(0.0, [box(100, 100)]) == [box(100, 100)]
    assert tr.update(0.1, []) != []


def test_a_moving_face_missed_for_frames_stays_covered_where_it_went() -> None:
    tr = Tracker(persist_s=1.0)
    fps, v = 10.0, 200.0  # 200 px/s to the right: 20 px per frame, half the face per frame
    for i in range(5):
        tr.update(i / fps, [box(100 + v * i / fps, 100)])
    for i in range(5, 9):  # four frames without a detection (0.4 s)
        face = box(100 + v * i / fps, 100)
        cover = tr.update(i / fps, [])
        assert covered(cover, face), i
        # ... and the cover still includes where it was last seen (it may have stopped)
        assert covered(cover, box(100 + v * 4 / fps, 100))


def test_without_motion_prediction_the_cover_would_miss_it() -> None:
    # The same miss with a tracker that never learns velocity (smoothing towards zero):
    # shows the prediction, not just the persistence, keeps a fast face covered.
    tr = Tracker(persist_s=1.0, growth=0.0, max_speed=0.0)
    for i in range(5):
        tr.update(i / 10, [box(100 + 20 * i, 100)])
    assert not covered(tr.update(0.8, []), box(100 + 20 * 8, 100))


def test_regions_expire_after_persist_s() -> None:
    tr = Tracker(persist_s=0.5)
    tr.update(0.0, [box(0, 0)])
    assert tr.update(0.5, []) != []
    assert tr.update(0.51, []) == []
    assert tr.tracks == []


def test_persist_zero_keeps_nothing_after_a_miss() -> None:
    tr = Tracker(persist_s=0.0)
    tr.update(0.0, [box(0, 0)])
    assert tr.update(0.1, []) == []


def test_two_faces_keep_their_own_tracks() -> None:
    tr = Tracker(persist_s=1.0)
    for i in range(4):
        tr.update(i * 0.1, [box(100 + 20 * i, 100), box(600 - 20 * i, 300)])
    assert len(tr.tracks) == 2
    assert sorted(round(t.vx) for t in tr.tracks) == [-200, 200]
    cover = tr.update(0.5, [])
    assert covered(cover, box(200, 100)) and covered(cover, box(500, 300))


def test_a_new_face_starts_a_track_and_an_old_one_is_kept() -> None:
    tr = Tracker(persist_s=1.0)
    tr.update(0.0, [box(0, 0)])
    cover = tr.update(0.1, [box(500, 500)])
    assert len(tr.tracks) == 2 and len(cover) == 2


def test_velocity_is_capped_so_a_wrong_match_cannot_fling_the_cover_away() -> None:
    tr = Tracker(persist_s=1.0, max_speed=10.0, min_iou=0.0)
    tr.update(0.0, [box(0, 0, 40)])
    tr.update(0.01, [box(30, 0, 40)])  # 3000 px/s measured; cap is 10 face widths/s
    (t,) = tr.tracks
    assert abs(t.vx) <= 10 * 40 + 1e-6


def test_time_going_back_resets_the_tracks() -> None:
    tr = Tracker(persist_s=1.0)
    tr.update(5.0, [box(0, 0)])
    assert tr.update(0.0, []) == []


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        Tracker(persist_s=-1)
    with pytest.raises(ValueError):
        Tracker(persist_s=1, smoothing=0)
