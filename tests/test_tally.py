"""Counting faces and weak regions: one face found by two models counts once."""

from __future__ import annotations

from edgeguard.geometry import Box, Detection
from edgeguard.tally import Tally, tally


def _d(x1: float, y1: float, x2: float, y2: float, score: float, weak: bool) -> Detection:
    return Detection(Box(x1, y1, x2, y2), score, weak=weak)


def test_overlapping_detections_count_once_as_a_face_when_any_is_confident() -> None:
    dets = [
        _d(10, 10, 50, 50, 0.9, False),  # BlazeFace's box
        _d(12, 16, 52, 60, 0.3, True),  # CenterFace's box of the same face, weak
        _d(200, 200, 230, 230, 0.2, True),  # a weak region elsewhere
        _d(205, 203, 231, 232, 0.15, True),  # ... found twice
        _d(400, 10, 440, 50, 0.7, False),  # another face
    ]
    assert tally(dets) == Tally(faces=2, weak=1)
    assert tally([]) == Tally(0, 0)
    assert Tally(2, 1).text() == "2 faces, 1 weak region"
    assert (Tally(1, 0) + Tally(0, 3)).text() == "1 face, 3 weak regions"


def test_a_small_box_inside_a_larger_one_is_the_same_face() -> None:
    dets = [_d(0, 0, 100, 100, 0.6, False), _d(30, 30, 60, 60, 0.4, True)]
    assert tally(dets) == Tally(faces=1, weak=0)
