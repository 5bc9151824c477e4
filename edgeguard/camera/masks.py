"""Privacy masks: fixed polygons of the camera's view (a neighbour's window, a street)
redacted in every video frame and every still, whatever the search finds.

Polygons are in main-frame pixels (``camera.masks``); they are checked against the real
frame size when the camera opens (a ``file:`` source has its own size), so a mask that
would miss its target is refused rather than silently clipped. Pure: arrays in, arrays
out; redaction with the ``[redact]`` mode and colour, over the polygon's pixels (its edge
included).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeguard.geometry import Region
from edgeguard.redact import redact

Polygon = Sequence[Sequence[int]]


def check(masks: Sequence[Polygon], width: int, height: int) -> None:
    """ValueError naming the first mask that has fewer than 3 points or a point outside
    the ``width`` x ``height`` frame."""
    for i, poly in enumerate(masks):
        if len(poly) < 3:
            raise ValueError(f"camera.masks[{i}]: a polygon needs at least 3 points, "
                             f"got {len(poly)}")
        for x, y in poly:
            if not (0 <= x < width and 0 <= y < height):
                raise ValueError(f"camera.masks[{i}]: point ({x}, {y}) is outside the "
                                 f"{width}x{height} frame")
        pts = np.asarray(poly, np.float64)
        area = 0.5 * abs(float(np.dot(pts[:, 0], np.roll(pts[:, 1], 1))
                               - np.dot(pts[:, 1], np.roll(pts[:, 0], 1))))
        if area < 1.0:
            raise ValueError(f"camera.masks[{i}]: the polygon has no area")


def apply(rgb: np.ndarray, masks: Sequence[Polygon], *, mode: str,
          color: tuple[int, int, int]) -> None:
    """Redact every mask polygon of ``rgb`` in place."""
    h, w = rgb.shape[:2]
    for poly in masks:
        pts = np.asarray(poly, np.int32)
        x1, y1 = (int(v) for v in pts.min(axis=0))
        x2, y2 = (int(v) + 1 for v in pts.max(axis=0))
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        roi = rgb[y1:y2, x1:x2]
        done = roi.copy()
        redact(done, [Region(0, 0, x2 - x1, y2 - y1)], mode=mode, shape="box", color=color)
        inside = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(inside, [pts - np.array([x1, y1], np.int32)], 1)
        sel = inside.astype(bool)
        roi[sel] = done[sel]
