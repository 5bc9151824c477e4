"""Temporal hold for a video file: a face found in frame n stays covered a few frames either
side of n. Pure (no PyAV, no files).

A file, unlike a camera, can wait: frames are released ``frames`` frames late, so a face
detected in frame n is also added to frames n-1 ... n-k still held back (grown by
:data:`BACK_GROWTH` per frame of distance, since the face was somewhere near there), and the
camera's :class:`~edgeguard.camera.tracker.Tracker` carries it forward to frames n+1 ... n+k
along its motion. A face whose score dips under the threshold for up to k frames is
therefore covered throughout. Memory: k+1 decoded frames.
"""

from __future__ import annotations

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
        # The tracker keeps a face for `frames` frame intervals after it was last seen (a
        # half interval of slack absorbs timestamp jitter).
        self.tracker = Tracker(persist_s=(frames + 0.5) * frame_s if frames else 0.0)
        self._pending: deque[_Pending[T]] = deque()

    def push(self, item: T, t: float, found: Sequence[Box]) -> list[tuple[T, list[Box]]]:
        """Take frame ``item`` at stream time ``t`` with the faces ``found`` in it; returns
        the frames now complete (at most one), with the boxes to cover in each."""
        cover = self.tracker.update(t, list(found)) if self.frames else list(found)
        for dist, back in enumerate(reversed(self._pending), start=1):
            factor = 1.0 + BACK_GROWTH * dist
            back.boxes.extend(_grow(b, factor) for b in found)
        self._pending.append(_Pending(item, t, cover))
        out = []
        while len(self._pending) > self.frames:
            done = self._pending.popleft()
            out.append((done.item, done.boxes))
        return out

    def flush(self) -> list[tuple[T, list[Box]]]:
        """The frames still held back (end of the stream)."""
        out = [(p.item, p.boxes) for p in self._pending]
        self._pending.clear()
        return out
