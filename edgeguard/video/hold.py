"""Temporal hold for a video file: a face found in frame n stays covered a few frames either
side of n. Pure (no PyAV, no files).

A file, unlike a camera, can wait: frames are released ``frames`` frames late, so a face
detected in frame n is also added to frames n-1 ... n-k still held back, and the camera's
:class:`~edgeguard.camera.tracker.Tracker` carries it forward to frames n+1 ... n+k along
its motion. Backwards, the box is moved back along the track's velocity (known from the
second sighting on; the second sighting also corrects the frames before the first) and
grown by :data:`BACK_GROWTH` per frame of distance. A face whose score dips under the
threshold for up to k frames is therefore covered throughout. Memory: k+2 decoded frames.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from edgeguard.camera.tracker import Tracker
from edgeguard.geometry import Box

T = TypeVar("T")

#: A box copied back to an earlier frame grows by this fraction of its size per frame.
BACK_GROWTH: Final = 0.1


@dataclass
class _Pending(Generic[T]):
    item: T
    t: float
    boxes: list[Box] = field(default_factory=list)


def _union(a: Box, b: Box) -> Box:
    return Box(min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2))


def _grow(b: Box, factor: float) -> Box:
    cx, cy = b.center
    hw, hh = b.width * factor / 2.0, b.height * factor / 2.0
    return Box(cx - hw, cy - hh, cx + hw, cy + hh)


class Hold(Generic[T]):
    """Feed frames in order with :meth:`push`; frames come out ``frames`` frames later with
    every box to cover in them; :meth:`flush` releases the rest at the end."""

    def __init__(self, *, frames: int, frame_s: float) -> None:
        if frames < 0 or not frame_s > 0:
            raise ValueError("frames >= 0 and frame_s > 0")
        self.frames = frames
        self.frame_s = frame_s
        # The tracker keeps a face for `frames` frame intervals after it was last seen (a
        # half interval of slack absorbs timestamp jitter).
        self.tracker = Tracker(persist_s=(frames + 0.5) * frame_s if frames else 0.0)
        self._pending: deque[_Pending[T]] = deque()
        self._first: dict[int, tuple[float, Box]] = {}  # track id -> its first sighting
        self._last: dict[int, tuple[float, Box]] = {}  # track id -> its latest sighting
        # The last k frames' boxes with their motion (pixels per second).
        self._recent: deque[tuple[float, list[tuple[Box, float, float]]]] = deque(
            maxlen=max(1, frames))

    def push(self, item: T, t: float, found: Sequence[Box]) -> list[tuple[T, list[Box]]]:
        """Take frame ``item`` at stream time ``t`` with the faces ``found`` in it; returns
        the frames now complete (at most one), with the boxes to cover in each."""
        if not self.frames:
            return [(item, list(found))]
        cover = self.tracker.update(t, list(found))
        # Forwards, besides the tracker's cover: every box of the last k frames, moved along
        # its motion and grown, whatever the tracker matched it to since (a false detection
        # beside the face can pull a track away from it).
        for seen_t, moving in self._recent:
            dist = round((t - seen_t) / self.frame_s)
            if dist > self.frames:
                continue
            factor = 1.0 + BACK_GROWTH * dist
            for box, vx, vy in moving:
                dt = t - seen_t
                moved = Box(box.x1 + vx * dt, box.y1 + vy * dt, box.x2 + vx * dt,
                            box.y2 + vy * dt)
                cover.append(_union(_grow(moved, factor), _grow(box, factor)))
        now: list[tuple[Box, float, float]] = []
        for tr in self.tracker.tracks:
            if tr.seen != t:
                continue  # not seen in this frame
            prev = self._last.get(tr.id)
            self._last[tr.id] = (t, tr.box)
            if prev is None or tr.hits == 1:
                self._first[tr.id] = (t, tr.box)
                self._back(tr.box, t, 0.0, 0.0, before=t)
                now.append((tr.box, 0.0, 0.0))
                continue
            # The motion between the last two sightings (the tracker's own estimate is
            # smoothed and capped for live video; looking back, the measured one is better).
            dt = t - prev[0]
            (px, py), (cx, cy) = prev[1].center, tr.box.center
            vx, vy = ((cx - px) / dt, (cy - py) / dt) if dt > 0 else (0.0, 0.0)
            # At most one face size per frame interval: faster is a mismatch, not a face.
            cap = max(tr.box.width, tr.box.height) / self.frame_s
            speed = math.hypot(vx, vy)
            if speed > cap:
                vx, vy = vx * cap / speed, vy * cap / speed
            self._back(tr.box, t, vx, vy, before=t)
            now.append((tr.box, vx, vy))
            first = self._first.pop(tr.id, None)
            if first is not None:
                # The second sighting gives the motion: the frames held back from before
                # the first sighting get that box moved back along it.
                self._back(first[1], first[0], vx, vy, before=first[0])
        self._recent.append((t, now))
        self._pending.append(_Pending(item, t, cover))
        out = []
        # One frame more than the hold is kept back, so that the second sighting can still
        # correct all k frames before the first.
        while len(self._pending) > self.frames + 1:
            done = self._pending.popleft()
            out.append((done.item, done.boxes))
        live = {tr.id for tr in self.tracker.tracks}
        self._first = {k: v for k, v in self._first.items() if k in live}
        self._last = {k: v for k, v in self._last.items() if k in live}
        return out

    def _back(self, box: Box, t: float, vx: float, vy: float, *, before: float) -> None:
        """Cover ``box`` (seen at ``t``, moving at vx, vy px/s) in the held-back frames
        earlier than ``before``: where it was (moved back along its motion) and where it is
        (grown by :data:`BACK_GROWTH` per frame of distance), as one box."""
        dist = 0
        for back in reversed(self._pending):
            if back.t >= before:
                continue
            dist += 1
            if dist > self.frames:
                break
            dt = t - back.t
            factor = 1.0 + BACK_GROWTH * dist
            if vx or vy:
                moved = Box(box.x1 - vx * dt, box.y1 - vy * dt, box.x2 - vx * dt,
                            box.y2 - vy * dt)
                back.boxes.append(_union(_grow(moved, factor), _grow(box, factor)))
            else:
                back.boxes.append(_grow(box, factor))

    def flush(self) -> list[tuple[T, list[Box]]]:
        """The frames still held back (end of the stream)."""
        out = [(p.item, p.boxes) for p in self._pending]
        self._pending.clear()
        return out
