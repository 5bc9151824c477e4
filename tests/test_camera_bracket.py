"""The bracket with frames the search skipped (issue 13): pure, boxes and times."""

from __future__ import annotations

from edgeguard.camera.bracket import Bracket, Held
from edgeguard.geometry import Box

FPS = 15.0


def held(i: int, *, searched: bool, found: list[tuple[int, Box, float, float]] | None = None,
         cover: list[Box] | None = None) -> Held:
    return Held(frame=i, t=i / FPS, cover=cover or [], found=found or [], searched=searched,
                size=(1280, 720))


def test_an_unsearched_frame_waits_for_delay_searched_frames_and_gets_their_faces() -> None:
    b = Bracket(2)
    face = Box(600, 300, 630, 330)
    out = []
    # searched every third frame: 0, 3, 6, 9; the face is found in frame 3 only
    for i in range(10):
        found = [(1, face, 0.0, 0.0)] if i == 3 else []
        out += list(b.push(held(i, searched=i % 3 == 0, found=found)))
    released = [h.frame for h, _ in out]
    # a frame waits for two searched frames after it: 4 and 5 for 6 and 9; 6 for 12
    assert released == [0, 1, 2, 3, 4, 5]
    covers = {h.frame: c for h, c in out}
    for i in (0, 1, 2):  # before the search that found it: carried back over each
        (c,), = [covers[i]]
        assert c.x1 <= face.x1 and c.x2 >= face.x2 and c.y1 <= face.y1 and c.y2 >= face.y2
    assert covers[4] == [] and covers[5] == []  # after it: the tracker's job, not the bracket's


def test_a_face_found_near_the_edge_is_carried_back_to_the_edge() -> None:
    """A face walking in from the right is found once most of it is in; the frames
    before, when it was half outside, are covered to the edge."""
    b = Bracket(4)
    face = Box(1230, 300, 1254, 324)  # 26 px from the right edge, 24 px wide
    out = []
    for i in range(6):
        found = [(1, face, 0.0, 0.0)] if i == 4 else []
        out += list(b.push(held(i, searched=True, found=found)))
    (first, cover), = out[:1]
    assert first.frame == 0
    (c,), = [cover]
    assert c.x2 >= 1280  # reaches the edge it came in from
    assert c.x1 <= face.x1  # and still holds the face where it was found
    far = Bracket(1)
    mid = Box(600, 300, 624, 324)
    out = list(far.push(held(0, searched=True))) + list(
        far.push(held(1, searched=True, found=[(1, mid, 0.0, 0.0)])))
    (_, (c,)), = out
    assert c.x2 < 700  # a face far from every edge is not stretched to one


def test_a_face_long_found_in_the_middle_is_not_stretched_over_the_frame() -> None:
    """A large face found once, far back in a long hold (few searches): the carried
    region stays near the face; it is not stretched to every edge (a black frame)."""
    b = Bracket(1, max_held=60)
    face = Box(580, 300, 670, 390)  # 90 px, in the middle of 1280x720
    out = []
    for i in range(49):  # searched: the first and the last (3.2 s later)
        found = [(1, face, 0.0, 0.0)] if i == 48 else []
        out += list(b.push(held(i, searched=i in (0, 48), found=found)))
    (first, (c,)), = out[:1]
    assert first.frame == 0
    assert c.width < 600 and c.height < 400 and c.x1 > 0 and c.x2 < 1280
