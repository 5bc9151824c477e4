"""Which reduced-resolution views to run, and how to merge what they find. Pure numpy.

BlazeFace finds faces in a band of sizes relative to its input (a few percent to most of
the frame). A single whole-frame pass therefore misses every small face of a large photo.
The planner builds a pyramid of *levels*: level 0 is the whole frame letterboxed into the
model input; each finer level is ``level_ratio`` times larger and cut into overlapping
square tiles the size of the model input. A level is only planned while the faces it
would newly catch are at least ``min_face`` source pixels; the finest level is the one
at which a ``min_face`` face is ``face_lo`` input pixels, the smallest the model finds
reliably (measured per model, see the README). Tiles overlap by the largest face that
level is responsible for, so each such face lies wholly inside at least one tile.

The finest level holds most of the views (its tile count grows with the square of its
scale), so a view budget (``max_views`` + ``views_per_mp`` x megapixels) bounds the cost:
over budget, the finest level first shows its smallest faces smaller (down to
``fine_face_lo`` input pixels, where recall drops), then the smallest face planned for
grows. Small frames are cheap and keep the reliable sizes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edgeguard.detect.blazeface import weighted_nms


@dataclass(frozen=True, slots=True)
class Level:
    """One pyramid level: the frame resized by ``scale`` and cut into ``tiles``.

    ``tiles`` are (x, y) top-left corners in level pixels of ``size``-square windows;
    windows may reach past the level image (padded with black).
    """

    index: int
    model: str
    size: int  # model input side
    scale: float  # level pixels per source pixel
    width: int  # level image size
    height: int
    tiles: tuple[tuple[int, int], ...]
    face_range: tuple[float, float]  # source-pixel face heights this level is for


@dataclass(frozen=True, slots=True)
class PlanParams:
    """Planner settings (from the profile and config)."""

    whole_model: str
    whole_size: int
    whole_face_lo: float  # smallest face, model-input pixels, the whole-frame model finds
    tile_model: str
    tile_size: int
    min_face: float  # smallest face, source pixels, worth a view
    face_lo: float  # smallest face, model-input pixels, the tile model finds reliably
    face_hi: float  # largest face, model-input pixels, a tile level is responsible for
    max_upscale: float  # largest level scale (> 1 upsamples small images)
    fine_face_lo: float = 0.0  # finest level's face_lo may drop to this (0: face_lo) ...
    max_views: float = 0.0  # ... while the plan has more views than this (0: no budget)
    views_per_mp: float = 0.0  # budget added per megapixel of the frame


@functools.lru_cache(maxsize=64)  # frames come in a few sizes; the budget search is ~4 ms
def plan(width: int, height: int, p: PlanParams) -> tuple[Level, ...]:
    """The levels for a ``width`` x ``height`` frame, coarsest first.

    Built from the finest level up: the finest level is as coarse as it can be while a
    ``min_face`` face is still ``face_lo`` input pixels; each coarser level takes the
    faces up to ``face_hi`` input pixels, and the next one starts where it stops, until
    the whole-frame view catches everything larger. So every face from ``min_face`` up has
    a view where it is between ``face_lo`` and ``face_hi`` pixels tall (between
    ``fine_face_lo`` and ``face_hi`` on the finest level of a frame over the view budget,
    whose smallest planned face may then exceed ``min_face``: see the module docstring).
    """
    if width <= 0 or height <= 0:
        raise ValueError("empty frame")
    fine_min = p.fine_face_lo if 0 < p.fine_face_lo < p.face_lo else p.face_lo
    if p.max_views <= 0:
        return tuple(_plan(width, height, p, fine_min, p.min_face))
    budget = p.max_views + p.views_per_mp * width * height / 1e6
    # A view budget: small frames get the reliable face_lo everywhere; larger ones first
    # shrink the smallest faces' view size down to fine_face_lo, then raise the smallest
    # face planned for, until the plan fits (cost bounded by max_views, not by frame size).
    fine, min_face = p.face_lo, p.min_face
    levels = _plan(width, height, p, fine, min_face)
    while _views(levels) > budget and (fine > fine_min or min_face < p.min_face * 4):
        if fine > fine_min:
            fine = max(fine_min, fine - 0.5)
        else:
            min_face *= 1.05
        levels = _plan(width, height, p, fine, min_face)
    return tuple(levels)


def _views(levels: list[Level] | tuple[Level, ...]) -> int:
    return sum(len(lv.tiles) for lv in levels)


def _plan(width: int, height: int, p: PlanParams, fine_lo: float,
          min_face: float) -> list[Level]:
    """The plan whose finest level shows a ``min_face`` face ``fine_lo`` input pixels tall."""
    long_side = max(width, height)
    s0 = min(p.whole_size / long_side, p.max_upscale)
    w0, h0 = max(1, round(width * s0)), max(1, round(height * s0))
    whole_lo = p.whole_face_lo / s0  # smallest face the whole-frame view catches
    tiled: list[tuple[float, float, float]] = []  # (scale, face lo, face hi) fine -> coarse
    lo = min_face
    while lo < whole_lo:
        face_lo = p.face_lo if tiled else fine_lo
        scale = min(face_lo / lo, p.max_upscale)
        if scale <= s0:  # the whole-frame view already shows these faces large enough
            break
        hi = p.face_hi / scale
        tiled.append((scale, face_lo / scale, hi))
        if hi <= lo:  # cannot make progress (upscale cap): nothing finer is possible
            break
        lo = hi
    # Level 0 is letterboxed: the frame centred in the model input, as MediaPipe does.
    centre = (-((p.whole_size - w0) // 2), -((p.whole_size - h0) // 2))
    levels = [Level(0, p.whole_model, p.whole_size, s0, w0, h0, (centre,), (whole_lo, math.inf))]
    for scale, face_lo, face_hi in reversed(tiled):
        lw, lh = max(1, round(width * scale)), max(1, round(height * scale))
        overlap = min(p.tile_size - 1, math.ceil(p.face_hi))
        tiles = tuple(
            (x, y)
            for y in _starts(lh, p.tile_size, overlap)
            for x in _starts(lw, p.tile_size, overlap)
        )
        levels.append(Level(len(levels), p.tile_model, p.tile_size, scale, lw, lh, tiles,
                            (face_lo, face_hi)))
    return levels


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile starts covering [0, length) with at least ``overlap`` overlap."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


def tile_is_flat(grey_small: np.ndarray, factor: float, x: int, y: int, size: int,
                 min_std: float) -> bool:
    """True when the tile's visible content varies less than ``min_std`` grey levels.

    A flat area (sky, wall, padding) cannot hold a face; skipping it saves an inference.
    ``grey_small`` is the level's grey image shrunk by ``factor`` (level px per small px),
    so the check costs microseconds.
    """
    gh, gw = grey_small.shape
    x1, y1 = max(0, int(x / factor)), max(0, int(y / factor))
    x2 = min(gw, math.ceil((x + size) / factor))
    y2 = min(gh, math.ceil((y + size) / factor))
    patch = grey_small[y1:y2, x1:x2]
    return patch.size == 0 or float(patch.std()) < min_std


def absorb_contained(boxes: np.ndarray, scores: np.ndarray,
                     contain: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Absorb boxes lying mostly (``contain`` of the smaller's area) inside a better one.

    Such a box is a partial view of the same face (cut by a tile border, or a part found
    at a finer scale). It is dropped *only after* the kept box has been grown to cover it,
    so no redacted pixel is lost. ``boxes`` must be sorted best first.
    """
    kb = boxes.copy()
    if kb.shape[0] < 2:
        return kb, scores
    keep = np.ones(kb.shape[0], bool)
    for i in range(kb.shape[0]):  # best first
        if not keep[i]:
            continue
        for j in range(i + 1, kb.shape[0]):
            if not keep[j]:
                continue
            a, b = kb[i], kb[j]
            inter_w = min(a[2], b[2]) - max(a[0], b[0])
            inter_h = min(a[3], b[3]) - max(a[1], b[1])
            if inter_w <= 0 or inter_h <= 0:
                continue
            inter = inter_w * inter_h
            area_b = (b[2] - b[0]) * (b[3] - b[1])
            area_a = (a[2] - a[0]) * (a[3] - a[1])
            if inter >= contain * min(area_a, area_b):
                kb[i, 0] = min(a[0], b[0])
                kb[i, 1] = min(a[1], b[1])
                kb[i, 2] = max(a[2], b[2])
                kb[i, 3] = max(a[3], b[3])
                keep[j] = False
    return kb[keep], scores[keep]


def merge(boxes: np.ndarray, scores: np.ndarray, iou: float, contain: float = 0.6, *,
          min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge detections of the same face found in several views, and decide which to keep.

    Weighted NMS (as MediaPipe) by IoU; a cluster is kept when its best score reaches
    ``min_score``. Kept boxes then absorb partial views of the same face
    (:func:`absorb_contained`).
    """
    kb, ks = weighted_nms(boxes, scores, iou)
    keep = ks >= min_score
    return absorb_contained(kb[keep], ks[keep], contain)


__all__ = ["Level", "PlanParams", "absorb_contained", "merge", "plan", "tile_is_flat"]
