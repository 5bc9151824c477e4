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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeguard.detect.blazeface import iou_one_to_many


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


def plan(width: int, height: int, p: PlanParams) -> list[Level]:
    """The levels for a ``width`` x ``height`` frame, coarsest first.

    Built from the finest level up: the finest level is as coarse as it can be while a
    ``min_face`` face is still ``face_lo`` input pixels; each coarser level takes the
    faces up to ``face_hi`` input pixels, and the next one starts where it stops, until
    the whole-frame view catches everything larger. So every face from ``min_face`` up has
    a view where it is between ``face_lo`` and ``face_hi`` pixels tall.
    """
    if width <= 0 or height <= 0:
        raise ValueError("empty frame")
    long_side = max(width, height)
    s0 = min(p.whole_size / long_side, p.max_upscale)
    w0, h0 = max(1, round(width * s0)), max(1, round(height * s0))
    whole_lo = p.whole_face_lo / s0  # smallest face the whole-frame view catches
    tiled: list[tuple[float, float, float]] = []  # (scale, face lo, face hi) fine -> coarse
    lo = p.min_face
    while lo < whole_lo:
        scale = min(p.face_lo / lo, p.max_upscale)
        if scale <= s0:  # the whole-frame view already shows these faces large enough
            break
        hi = p.face_hi / scale
        tiled.append((scale, p.face_lo / scale, hi))
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


def merge(boxes: np.ndarray, scores: np.ndarray, iou: float,
          contain: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Merge detections of the same face found in several views.

    Weighted NMS (as MediaPipe) by IoU, then containment: a box lying mostly (``contain``
    of its area) inside a higher-scoring kept box is a partial view of the same face (cut
    by a tile border, or a part found at a finer scale) and is dropped *only after* the
    kept box has been grown to cover it, so no redacted pixel is lost by merging.
    """
    from edgeguard.detect.blazeface import weighted_nms

    kb, ks = weighted_nms(boxes, scores, iou)
    if kb.shape[0] < 2:
        return kb, ks
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
                # grow the kept box to the union, keep the best score
                kb[i, 0] = min(a[0], b[0])
                kb[i, 1] = min(a[1], b[1])
                kb[i, 2] = max(a[2], b[2])
                kb[i, 3] = max(a[3], b[3])
                keep[j] = False
    return kb[keep], ks[keep]


__all__ = ["Level", "PlanParams", "iou_one_to_many", "merge", "plan", "tile_is_flat"]
