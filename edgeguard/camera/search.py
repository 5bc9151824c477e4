"""Which main-resolution pixels the camera searches in a frame.

A face under ~40 main pixels is under ~12 pixels of the 384x216 lores frame, too small for
the detector there; a full search of the 1280x720 main frame down to 16-pixel faces is ~39
views (~150 ms on one x86 core pair), twice the frame budget at 15 fps. Like Frigate, which
runs its detector on the regions motion marks and tracks objects in between, each frame
searches main-resolution pixels where a face can newly be, within a view budget:

- the whole-frame view of the main frame (one view: the large faces), every frame;
- the regions that changed (motion on the lores frame against a running average, as
  Frigate's motion detector does), at main resolution down to ``min_face``;
- the faces being tracked, each in a crop around where the tracker predicts it, so a face
  that stops moving keeps being found;
- a slice of the full main-frame plan, so the static rest of the frame is searched once
  every ``sweep_frames`` frames (the first frame gets the whole plan at once).

A face that stands still is found by the sweep within ``sweep_frames``; the bracket
(:mod:`edgeguard.camera.bracket`) holds frames that long, so that face is covered from
its first frame too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from edgeguard.detect.planner import Level
from edgeguard.geometry import Box, Region

logger = logging.getLogger(__name__)

MOTION_ALPHA = 0.1  # the background average's weight for the newest frame
MOTION_MIN_AREA = 4  # lores pixels: a smaller changed blob is noise


class Motion:
    """Changed regions of the lores frame: grey, slightly blurred, against a running average
    of the previous frames (Frigate's motion detector does the same on a small grey frame).
    The first frame has no background and reports no motion."""

    def __init__(self, *, threshold: int, alpha: float = MOTION_ALPHA,
                 min_area: int = MOTION_MIN_AREA) -> None:
        if not 0 < alpha <= 1 or threshold < 1:
            raise ValueError("threshold >= 1 and 0 < alpha <= 1")
        self.threshold = threshold
        self.alpha = alpha
        self.min_area = min_area
        self._avg: np.ndarray | None = None

    def reset(self) -> None:
        self._avg = None

    def update(self, rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The bounding boxes (x1, y1, x2, y2, exclusive) of what changed in ``rgb``."""
        grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (3, 3), 0)
        if self._avg is None or self._avg.shape != grey.shape:
            self._avg = grey.astype(np.float32)
            return []
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._avg))
        cv2.accumulateWeighted(grey, self._avg, self.alpha)
        mask = (diff > self.threshold).astype(np.uint8)
        if not mask.any():
            return []
        grown = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        out = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= self.min_area:
                out.append((x, y, x + w, y + h))
        return out


def merge_rects(rects: Sequence[Region]) -> list[Region]:
    """Overlapping rectangles joined into their bounding rectangles (repeated until none
    overlap), so a pixel is searched once per frame."""
    out = list(rects)
    changed = True
    while changed:
        changed = False
        merged: list[Region] = []
        for r in out:
            for i, m in enumerate(merged):
                if r.x1 < m.x2 and m.x1 < r.x2 and r.y1 < m.y2 and m.y1 < r.y2:
                    merged[i] = Region(min(r.x1, m.x1), min(r.y1, m.y1), max(r.x2, m.x2),
                                       max(r.y2, m.y2))
                    changed = True
                    break
            else:
                merged.append(r)
        out = merged
    return out


def merge_boxes(boxes: Sequence[Box], overlap: float = 0.5) -> list[Box]:
    """The same face found by two views (the sweep and a crop) as one box: boxes whose
    intersection is ``overlap`` of the smaller are replaced by their union (never a smaller
    box), so the tracker keeps one track per face."""
    out: list[Box] = []
    for b in sorted(boxes, key=lambda b: -b.area):
        for i, m in enumerate(out):
            iw = min(b.x2, m.x2) - max(b.x1, m.x1)
            ih = min(b.y2, m.y2) - max(b.y1, m.y1)
            if iw > 0 and ih > 0 and iw * ih >= overlap * min(b.area, m.area):
                out[i] = Box(min(b.x1, m.x1), min(b.y1, m.y1), max(b.x2, m.x2),
                             max(b.y2, m.y2))
                break
        else:
            out.append(b)
    return out


def padded(x1: float, y1: float, x2: float, y2: float, pad: float, width: int,
           height: int) -> Region | None:
    r = Region(max(0, math.floor(x1 - pad)), max(0, math.floor(y1 - pad)),
               min(width, math.ceil(x2 + pad)), min(height, math.ceil(y2 + pad)))
    return r if r.x2 > r.x1 and r.y2 > r.y1 else None


@dataclasses.dataclass
class SearchStats:
    views: int = 0  # views run for this frame
    motion_rects: int = 0
    track_rects: int = 0
    skipped_rects: int = 0  # over the view budget (the sweep still reaches them)


class FrameSearch:
    """One frame's main-resolution search; see the module docstring.

    ``pipe`` is the :class:`~edgeguard.pipeline.Pipeline` (``frame_plan``,
    ``search_levels``, ``search_rects``).
    """

    def __init__(self, pipe: Any, *, min_face: float, sweep_frames: int, max_views: int,
                 motion_threshold: int) -> None:
        self.pipe = pipe
        self.min_face = min_face
        self.sweep_frames = sweep_frames
        self.max_views = max_views
        self.motion = Motion(threshold=motion_threshold)
        self.stats = SearchStats()
        self._size: tuple[int, int] | None = None
        self._levels: tuple[Level, ...] = ()
        self._slices: list[list[Level]] = []
        self._frame = 0
        self._turn = 0
        self._turn = 0

    def reset(self) -> None:
        """Start again as on a first frame (a stream that restarted)."""
        self._size = None
        self.motion.reset()

    def _prepare(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._levels = self.pipe.frame_plan(width, height, min_face=self.min_face)
        views = [(lv, t) for lv in self._levels[1:] for t in lv.tiles]
        n = max(1, self.sweep_frames)
        per = math.ceil(len(views) / n) if views else 0
        self._slices = []
        for k in range(n):
            chunk = views[k * per:(k + 1) * per]
            by_level: dict[int, list[tuple[int, int]]] = {}
            for lv, t in chunk:
                by_level.setdefault(lv.index, []).append(t)
            self._slices.append([dataclasses.replace(self._levels[i], tiles=tuple(ts))
                                 for i, ts in sorted(by_level.items())])
        self._frame = 0
        logger.info("camera search: %dx%d main frame, %d views in all, swept over %d "
                    "frame(s) (%d a frame), faces from %g px", width, height,
                    len(views) + 1, n, per, self.min_face)

    def __call__(self, main: np.ndarray, lores: np.ndarray, tracked: Sequence[Box], *,
                 max_views: int | None = None) -> list[Box]:
        """Face boxes (main pixels) in this frame; ``tracked`` are the tracker's boxes
        predicted for this frame. ``max_views`` lowers the budget for this frame (the
        loop is behind); the whole-frame view and the sweep slice always run."""
        h, w = main.shape[:2]
        first = self._size != (w, h)
        if first:
            self._prepare(w, h)
        stats = SearchStats()
        motion = self.motion.update(lores)
        if first:
            levels: list[Level] = list(self._levels)  # the first frame: everything
        else:
            levels = [self._levels[0], *self._slices[self._frame % len(self._slices)]]
        self._frame += 1
        stats.views = sum(len(lv.tiles) for lv in levels)
        found = self.pipe.search_levels(main, levels)
        rects: list[Region] = []
        lh, lw = lores.shape[:2]
        sx, sy = w / lw, h / lh
        for x1, y1, x2, y2 in motion:
            # A changed edge may be a face's border: look around it, by more for a larger
            # blob (a crop that cuts a face finds a part of it, or nothing).
            pad = max(2.0 * self.min_face, min(96.0, 0.5 * max(x2 - x1, y2 - y1) * sx))
            r = padded(x1 * sx, y1 * sy, x2 * sx, y2 * sy, pad, w, h)
            if r is not None:
                rects.append(r)
        motion_rects = merge_rects(rects)
        track_rects = []
        for b in tracked:
            r = padded(b.x1, b.y1, b.x2, b.y2, max(self.min_face, 0.75 * max(b.width,
                                                                          b.height)), w, h)
            if r is not None and not any(_inside(r, m) for m in motion_rects):
                track_rects.append(r)
        # The rest of the budget goes to the rectangles, in turn: a rectangle left out
        # this frame is first in line the next (the bracket and the tracker cover the
        # frames between two searches of a moving face).
        budget = (self.max_views if max_views is None else max_views) - stats.views
        group = [*motion_rects, *merge_rects(track_rects)]
        n_motion = len(motion_rects)
        chosen: list[Region] = []
        start = self._turn % len(group) if group else 0
        for k in range(len(group)):
            i = (start + k) % len(group)
            r = group[i]
            cost = self._views(r)
            if cost > budget:
                stats.skipped_rects += 1
                continue
            budget -= cost
            stats.views += cost
            chosen.append(r)
            if i < n_motion:
                stats.motion_rects += 1
            else:
                stats.track_rects += 1
        self._turn += len(chosen)
        if chosen:
            found = [*found, *self.pipe.search_rects(main, chosen, min_face=self.min_face)]
        self.stats = stats
        return merge_boxes([d.box for d in found])

    def full(self, main: np.ndarray) -> list[Box]:
        """Every view of the main frame's plan (the end of a stream)."""
        h, w = main.shape[:2]
        levels = self.pipe.frame_plan(w, h, min_face=self.min_face)
        return [d.box for d in self.pipe.search_levels(main, levels)]

    def _views(self, r: Region) -> int:
        levels = self.pipe.frame_plan(_round_up(r.x2 - r.x1), _round_up(r.y2 - r.y1),
                                      min_face=self.min_face)
        return sum(len(lv.tiles) for lv in levels)


def _round_up(n: int, step: int = 32) -> int:
    return -(-n // step) * step


def _inside(a: Region, b: Region) -> bool:
    return a.x1 >= b.x1 and a.y1 >= b.y1 and a.x2 <= b.x2 and a.y2 <= b.y2
