"""Temporal safety for camera frames: a face's region outlives a missed detection. Pure.

Per-frame detection misses faces now and then (motion blur, a turned head, a frame where
the score dips under the threshold). A video written from per-frame detections alone
would flash that face unredacted for a frame. The tracker keeps one track per face:

- each frame's detections are matched to the tracks' predicted boxes (greedy, by overlap,
  then by centre distance within one face size, or within the distance ``max_speed``
  allows since the previous search, if longer: frames between two searches go
  unsearched when the search is slower than the camera, and a face that moved more than
  its width meanwhile is still the same face, whose velocity the bracket needs);
- a matched track takes the detected box and updates a constant-velocity estimate of the
  face's centre (exponentially smoothed, capped at ``max_speed`` face widths per second:
  a walker's face crosses about 7 of its widths per second);
- an unmatched track is kept for ``persist_s`` after the face was last seen. Its cover is
  the union of the box where the face was last seen and the box predicted from its
  velocity, grown by ``growth`` of its size per second unseen: the face is under it
  whether it stopped, kept moving, or moved a bit faster. Over-redaction is the price;
- unmatched detections start new tracks;
- in the frame where a track takes a detection, its cover is the detected box *and* the
  cover it had before that detection (where the face was predicted to be): a detection
  beside the face (a crop that cut the face, a false detection next to it) matched to the
  track would otherwise pull the region off the face and leave an eye visible.

Time is the frames' stream time in seconds, so the behaviour does not depend on how fast
the loop runs. All boxes are in the same pixel space (the main stream's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from edgeguard.geometry import Box


@dataclass
class Track:
    id: int
    box: Box  # where the face was last detected
    seen: float  # stream time of that detection
    vx: float = 0.0  # centre velocity, pixels per second
    vy: float = 0.0
    hits: int = 1
    prior: Box | None = None  # the cover before the last detection (kept in its frame)

    def predicted(self, t: float) -> Box:
        """The last box moved along the velocity to time ``t``."""
        dt = max(0.0, t - self.seen)
        dx, dy = self.vx * dt, self.vy * dt
        b = self.box
        return Box(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy)


def _union(a: Box, b: Box) -> Box:
    return Box(min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2))


def _grow(b: Box, factor: float) -> Box:
    cx, cy = b.center
    hw, hh = b.width * factor / 2.0, b.height * factor / 2.0
    return Box(cx - hw, cy - hh, cx + hw, cy + hh)


def _iou(a: Box, b: Box) -> float:
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


class Tracker:
    """Constant-velocity tracks over per-frame detections; see the module docstring."""

    def __init__(self, *, persist_s: float, growth: float = 0.5, smoothing: float = 0.5,
                 max_speed: float = 10.0, min_iou: float = 0.05) -> None:
        if persist_s < 0 or growth < 0 or not 0 < smoothing <= 1 or max_speed < 0:
            raise ValueError("persist_s, growth, max_speed >= 0 and 0 < smoothing <= 1")
        self.persist_s = persist_s
        self.growth = growth
        self.smoothing = smoothing
        self.max_speed = max_speed
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_t: float | None = None

    def reset(self) -> None:
        self.tracks = []
        self._last_t = None

    def update(self, t: float, boxes: Sequence[Box]) -> list[Box]:
        """Take frame ``t``'s detections; return every box to redact in that frame."""
        if self._last_t is not None and t < self._last_t:
            self.reset()  # the stream restarted (a file played again): old tracks are void
        gap = t - self._last_t if self._last_t is not None else 0.0  # since the last search
        self._last_t = t
        self.tracks = [tr for tr in self.tracks if t - tr.seen <= self.persist_s]
        unmatched_boxes = [b for b in boxes if b.width > 0 and b.height > 0]
        pairs: list[tuple[float, int, int]] = []
        predicted = [tr.predicted(t) for tr in self.tracks]
        for i, p in enumerate(predicted):
            size = max(p.width, p.height)
            # The frames skipped since the last search widen the reach, not the time a
            # face went unseen (a long-lost track must not take a neighbour's detection).
            reach = size * max(1.0, self.max_speed * gap)
            for j, b in enumerate(unmatched_boxes):
                iou = _iou(p, b)
                if iou >= self.min_iou:
                    pairs.append((2.0 + iou, i, j))  # overlap first
                    continue
                (pcx, pcy), (bcx, bcy) = p.center, b.center
                dist = math.hypot(pcx - bcx, pcy - bcy)
                if dist <= reach:
                    pairs.append((1.0 - dist / (reach + 1e-9), i, j))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        for _, i, j in pairs:
            if i in used_t or j in used_b:
                continue
            used_t.add(i)
            used_b.add(j)
            tr = self.tracks[i]
            tr.prior = self._cover_of(tr, t)
            self._observe(tr, t, unmatched_boxes[j])
        for j, b in enumerate(unmatched_boxes):
            if j not in used_b:
                self.tracks.append(Track(self._next_id, b, t))
                self._next_id += 1
        return self.cover(t)

    def cover(self, t: float) -> list[Box]:
        """The boxes to redact at time ``t`` without new detections (tracks as they stand)."""
        out: list[Box] = []
        for tr in self.tracks:
            if t - tr.seen > self.persist_s:
                continue
            out.append(self._cover_of(tr, t))
            if t == tr.seen and tr.prior is not None:
                out.append(tr.prior)
        return out

    def _cover_of(self, tr: Track, t: float) -> Box:
        """The box that covers track ``tr``'s face at ``t`` from its last detection."""
        age = t - tr.seen
        if age <= 0:
            return tr.box
        moved = _grow(tr.predicted(t), 1.0 + self.growth * age)
        return _union(tr.box, moved)

    def found_at(self, t: float) -> list[tuple[int, Box, float, float]]:
        """The faces detected at time ``t`` (after :meth:`update`): track id, box and
        velocity."""
        return [(tr.id, tr.box, tr.vx, tr.vy) for tr in self.tracks if tr.seen == t]

    def _observe(self, tr: Track, t: float, box: Box) -> None:
        dt = t - tr.seen
        if dt > 0:
            (ox, oy), (nx, ny) = tr.box.center, box.center
            mvx, mvy = (nx - ox) / dt, (ny - oy) / dt
            a = self.smoothing if tr.hits > 1 else 1.0
            vx = a * mvx + (1 - a) * tr.vx
            vy = a * mvy + (1 - a) * tr.vy
            cap = self.max_speed * max(box.width, box.height)
            speed = math.hypot(vx, vy)
            if speed > cap:  # max_speed 0: no motion prediction at all
                vx, vy = (vx * cap / speed, vy * cap / speed) if cap > 0 else (0.0, 0.0)
            tr.vx, tr.vy = vx, vy
        tr.box = box
        tr.seen = t
        tr.hits += 1
