"""Bracketed output: a frame is redacted and written only once the searches of the
``delay`` frames after it are known. Pure (boxes and times; the frames ride along).

The tracker covers a face *after* it was found (``persist_s``, following its motion). A
face found only later (the sweep reached its part of the frame, or its score rose) was
there before too: the bracket carries each found box back over the held frames, moved
back along the track's velocity and grown by ``growth`` of its size per second, the
mirror image of the tracker's persistence. So a face is covered from its first frame as
long as it is found within ``delay`` frames of it. The price is latency (``delay / fps``
seconds) and memory (``delay`` raw frames, never written anywhere).

Not every frame need be searched (the search is slower than the camera, or
``camera.search_every``): an unsearched frame is held like the others and written once
``delay`` *searched* frames follow it. Its cover is the union of the bracketing searches:
the tracker's boxes from the searches before it (moved along each face's motion and grown
with the time since) and the faces found in the searches after it, carried back here. So
every camera frame is written, whatever the search rate, and what the search rate costs is
the motion between two searches (the regions grow with it) and latency.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edgeguard.geometry import Box


@dataclass
class Held:
    """One searched frame waiting for its successors."""

    frame: Any  # the camera Frame (raw pixels, memory only)
    t: float  # stream time
    cover: list[Box] = field(default_factory=list)  # the tracker's boxes at this frame
    # faces detected in this frame: track id, box, velocity (px/s)
    found: list[tuple[int, Box, float, float]] = field(default_factory=list)
    error: str | None = None  # the search failed: the failure policy applies
    detect_ms: float = 0.0
    searched: bool = True  # False: covered by the searches around it alone
    size: tuple[int, int] | None = None  # the frame's width and height


EDGE_SPEED = 2.0  # face widths per second a face near the edge may have come in at
EDGE_MAX = 3.0  # face widths: a face farther from every edge did not just come in


def _from_edge(box: Box, size: tuple[int, int], dt: float) -> Box:
    """A face found near the frame's edge may have come in from it, so the region carried
    back reaches the nearest edge (a face entering is found only once most of it is in,
    and searches far apart may find it too seldom to know its velocity, or match it to
    the wrong track): when that edge is within a face size, and ``EDGE_SPEED`` face sizes
    a second further back in time, of at most ``EDGE_MAX`` face sizes."""
    w, h = size
    face = max(box.width, box.height)
    reach = face * min(EDGE_MAX, 1.0 + EDGE_SPEED * dt)
    gaps = {"left": box.x1, "top": box.y1, "right": w - box.x2, "bottom": h - box.y2}
    edge = min(gaps, key=lambda k: gaps[k])
    if gaps[edge] > reach:
        return box
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    if edge == "left":
        x1 = 0.0
    elif edge == "top":
        y1 = 0.0
    elif edge == "right":
        x2 = float(w)
    else:
        y2 = float(h)
    return Box(x1, y1, x2, y2)


def _back(box: Box, vx: float, vy: float, dt: float, growth: float) -> Box:
    """Where a face seen at ``box`` was ``dt`` seconds earlier, generously: the union of
    the box and the box moved back along the velocity, grown with the time."""
    dx, dy = -vx * dt, -vy * dt
    f = 1.0 + growth * dt
    cx, cy = (box.x1 + box.x2) / 2 + dx, (box.y1 + box.y2) / 2 + dy
    hw, hh = box.width * f / 2, box.height * f / 2
    return Box(min(box.x1, cx - hw), min(box.y1, cy - hh), max(box.x2, cx + hw),
               max(box.y2, cy + hh))


class Bracket:
    """A FIFO of :class:`Held` frames; :meth:`push` returns the frames that are ready,
    each with every box to redact in it."""

    def __init__(self, delay: int, *, growth: float = 0.5, max_held: int | None = None) -> None:
        if delay < 0 or growth < 0:
            raise ValueError("delay and growth must be >= 0")
        self.delay = delay
        self.growth = growth
        # A memory bound: when no search finishes for this many frames, the oldest is
        # released with what is known (the tracker's boxes and any later search held).
        self.max_held = max(delay + 1, max_held if max_held is not None else 4 * delay + 4)
        self._held: collections.deque[Held] = collections.deque()
        self._searched = 0  # held frames that were searched

    def __len__(self) -> int:
        return len(self._held)

    def push(self, item: Held) -> Iterator[tuple[Held, list[Box]]]:
        if self._held and item.t < self._held[-1].t:
            yield from self.drain()  # the stream restarted: nothing carries back over it
        self._held.append(item)
        self._searched += item.searched
        # Searched frames, not stream time: the sweep covers the frame once every so many
        # *searched* frames, so when frames go unsearched the hold (and the latency) grows
        # with them rather than releasing a frame the sweep has not covered.
        while self._held and (self._searched - self._held[0].searched >= self.delay
                              or len(self._held) > self.max_held):
            yield self._pop()

    def held(self) -> list[Held]:
        """The frames waiting, oldest first (the end of a stream searches them in full)."""
        return list(self._held)

    def drain(self) -> Iterator[tuple[Held, list[Box]]]:
        """Every held frame, with what is known (the end of the stream, a stop)."""
        while self._held:
            yield self._pop()

    def _pop(self) -> tuple[Held, list[Box]]:
        """The oldest frame and its cover: the tracker's boxes, plus each face found in a
        later held frame but not in this one, carried back from its next detection (the
        nearest in time: the smallest region that holds it)."""
        first = self._held.popleft()
        self._searched -= first.searched
        cover = list(first.cover)
        # A face's first detection has no velocity yet; its later ones in the bracket do.
        velocity = {tid: (vx, vy) for later in self._held for tid, _, vx, vy in later.found}
        done = {tid for tid, *_ in first.found}
        for later in self._held:
            dt = later.t - first.t
            for tid, box, _, _ in later.found:
                if tid not in done:
                    done.add(tid)
                    if later.size is not None:
                        box = _from_edge(box, later.size, dt)
                    cover.append(_back(box, *velocity[tid], dt, self.growth))
        return first, cover
