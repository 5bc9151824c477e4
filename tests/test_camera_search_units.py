"""Pure parts of the camera's main search: the bracket, motion, merging. Arrays only."""

from __future__ import annotations

import numpy as np
import pytest

from edgeguard.camera.bracket import Bracket, Held
from edgeguard.camera.search import Motion, merge_boxes, merge_rects
from edgeguard.geometry import Box, Region


def test_the_bracket_releases_in_order_after_its_delay() -> None:
    b = Bracket(2)
    out = [h.t for i in range(5) for h, _ in b.push(Held(None, i / 10))]
    assert out == [0.0, 0.1, 0.2]
    assert [h.t for h, _ in b.drain()] == [0.3, 0.4]
    assert [h.t for i in range(2) for h, _ in Bracket(0).push(Held(None, i))] == [0, 1]


def test_a_face_found_later_is_carried_back_along_its_motion() -> None:
    b = Bracket(3, growth=0.0)
    face = Box(100, 100, 120, 124)
    # Found only in the third frame, moving +100 px/s in x (its later detection says so).
    frames = [Held(None, 0.0), Held(None, 0.1),
              Held(None, 0.2, found=[(7, face, 100.0, 0.0)]),
              Held(None, 0.3, found=[(7, Box(110, 100, 130, 124), 100.0, 0.0)])]
    released = [cover for f in frames for _, cover in b.push(f)]
    first = released[0]
    # At t=0 the face was 20 px to the left: the carried region holds both places.
    assert len(first) == 1 and first[0].x1 <= 80 and first[0].x2 >= 120
    assert released[0] != []  # without the bracket this frame had nothing to redact


def test_a_face_found_in_the_frame_itself_is_not_carried() -> None:
    b = Bracket(1)
    face = Box(0, 0, 10, 10)
    held = [Held(None, 0.0, cover=[face], found=[(1, face, 50.0, 0.0)]),
            Held(None, 0.1, found=[(1, Box(5, 0, 15, 10), 50.0, 0.0)])]
    (_, cover), = [c for h in held for c in b.push(h)]
    assert cover == [face]  # the tracker's box alone: no trail


def test_motion_finds_what_moved_and_nothing_on_the_first_frame() -> None:
    m = Motion(threshold=20)
    frame = np.full((90, 160, 3), 80, np.uint8)
    assert m.update(frame) == []
    moved = frame.copy()
    moved[30:50, 100:120] = 200
    (x1, y1, x2, y2), = m.update(moved)
    assert x1 <= 100 and y1 <= 30 and x2 >= 120 and y2 >= 50
    assert x2 - x1 < 40 and y2 - y1 < 40
    with pytest.raises(ValueError):
        Motion(threshold=0)


def test_merging_rects_and_boxes() -> None:
    rects = merge_rects([Region(0, 0, 10, 10), Region(5, 5, 20, 20), Region(50, 50, 60, 60)])
    assert sorted((r.x1, r.y1, r.x2, r.y2) for r in rects) == [(0, 0, 20, 20),
                                                                (50, 50, 60, 60)]
    boxes = merge_boxes([Box(0, 0, 10, 10), Box(1, 1, 9, 11), Box(30, 0, 40, 10)])
    assert Box(0, 0, 10, 11) in boxes and len(boxes) == 2  # the union, never smaller
