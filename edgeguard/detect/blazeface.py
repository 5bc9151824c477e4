"""BlazeFace post-processing in pure numpy: SSD anchors, box decoding, weighted NMS.

Ported from MediaPipe's calculators, with the option values of its face-detection graphs:
- ``SsdAnchorsCalculator`` (mediapipe/calculators/tflite/ssd_anchors_calculator.cc):
  anchors on one feature map per stride; consecutive layers with the same stride share a
  grid; each layer adds one anchor per aspect ratio (only 1.0 here) plus, when
  ``interpolated_scale_aspect_ratio > 0``, one more at the interpolated scale. With
  ``fixed_anchor_size: true`` every anchor's width and height are 1.
- ``TensorsToDetectionsCalculator`` (tensors_to_detections_calculator.cc) with
  ``reverse_output_order: true``, ``num_coords: 16`` (box + 6 keypoints),
  ``sigmoid_score: true``, ``score_clipping_thresh: 100`` and x/y/w/h scale = input size.
- ``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED`` and IoU overlap: each kept
  face is the score-weighted mean of every candidate overlapping the best one.

Everything works in normalised coordinates of the model input ([0, 1] over its width and
height); mapping to source pixels is the caller's (see
:class:`edgeguard.detect.detector.FaceDetector`, which places each view in its level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 6
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS  # 16
SCORE_CLIP = 100.0


@dataclass(frozen=True, slots=True)
class AnchorOptions:
    """The subset of MediaPipe's SsdAnchorsCalculatorOptions BlazeFace uses.

    ``min_scale``/``max_scale`` only size anchors, which ``fixed_anchor_size`` makes 1;
    they are kept so the manifest states the reference options in full.
    """

    input_size: int
    num_layers: int
    min_scale: float
    max_scale: float
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    anchor_offset: float = 0.5

    def __post_init__(self) -> None:
        if len(self.strides) != self.num_layers:
            raise ValueError("one stride per layer is required")


def generate_anchors(opts: AnchorOptions) -> np.ndarray:
    """Anchor centres as an (N, 2) float32 array of (x, y) in [0, 1].

    Anchor sizes are all 1 (``fixed_anchor_size``), so only the centres matter; the
    number of anchors per cell is still computed exactly as MediaPipe does, which fixes
    the order the model's outputs come in.
    """
    centres: list[np.ndarray] = []
    layer = 0
    n = opts.num_layers
    while layer < n:
        per_cell = 0
        last = layer
        # Layers with the same stride share one feature map.
        while last < n and opts.strides[last] == opts.strides[layer]:
            per_cell += 1  # aspect ratio 1.0
            if opts.interpolated_scale_aspect_ratio > 0.0:
                per_cell += 1
            last += 1
        stride = opts.strides[layer]
        fm = math.ceil(opts.input_size / stride)
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        cx = (xs + opts.anchor_offset) / fm
        cy = (ys + opts.anchor_offset) / fm
        grid = np.stack([cx.ravel(), cy.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def sigmoid_scores(raw_scores: np.ndarray) -> np.ndarray:
    """Scores as MediaPipe computes them: clip the logits to +-100, then sigmoid."""
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    out: np.ndarray = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return out


def decode_boxes(raw_boxes: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """Decode raw regressor output to (N, 16) normalised [x1, y1, x2, y2, kx0, ky0, ...].

    ``reverse_output_order``: the raw box is (x_centre, y_centre, w, h), offsets in input
    pixels from the anchor centre; keypoints are (x, y) offsets likewise.
    """
    raw = raw_boxes.reshape(-1, NUM_COORDS).astype(np.float32)
    if raw.shape[0] != anchors.shape[0]:
        raise ValueError(f"{raw.shape[0]} boxes for {anchors.shape[0]} anchors")
    scale = float(input_size)
    ax = anchors[:, 0:1]
    ay = anchors[:, 1:2]
    cx = raw[:, 0:1] / scale + ax
    cy = raw[:, 1:2] / scale + ay
    w = raw[:, 2:3] / scale
    h = raw[:, 3:4] / scale
    out = np.empty_like(raw)
    out[:, 0:1] = cx - w / 2
    out[:, 1:2] = cy - h / 2
    out[:, 2:3] = cx + w / 2
    out[:, 3:4] = cy + h / 2
    out[:, 4::2] = raw[:, 4::2] / scale + ax
    out[:, 5::2] = raw[:, 5::2] / scale + ay
    return out


def candidates(
    raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
    min_score: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded boxes and scores of the anchors scoring at least ``min_score``.

    Only those are decoded: a frame without faces costs a threshold and nothing more.
    """
    scores = sigmoid_scores(raw_scores)
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return np.zeros((0, NUM_COORDS), np.float32), np.zeros((0,), np.float32)
    boxes = decode_boxes(raw_boxes.reshape(-1, NUM_COORDS)[keep], anchors[keep], input_size)
    # MediaPipe drops boxes with non-positive width or height.
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[ok], scores[keep][ok]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x1, y1, x2, y2] box against an (N, >=4) array."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    a = (box[2] - box[0]) * (box[3] - box[1])
    b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = a + b - inter
    out: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-max suppression.

    Repeatedly take the best remaining candidate; every remaining candidate whose IoU with
    it exceeds ``iou_threshold`` (the best one included) is merged into one detection whose
    coordinates (box and keypoints) are the score-weighted mean and whose score is the
    best one's. Returns (M, C) boxes and (M,) scores, best first.
    """
    if boxes.shape[0] == 0:
        width = boxes.shape[1] if boxes.ndim == 2 else NUM_COORDS
        return boxes.reshape(0, width), scores
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    scores = scores[order]
    out_boxes: list[np.ndarray] = []
    out_scores: list[float] = []
    remaining = np.arange(boxes.shape[0])
    while remaining.size:
        top = remaining[0]
        overlap = iou_one_to_many(boxes[top], boxes[remaining])
        group = remaining[overlap > iou_threshold]
        if group.size == 0 or group[0] != top:
            group = np.concatenate([[top], group[group != top]])
        w = scores[group][:, None]
        out_boxes.append((boxes[group] * w).sum(axis=0) / w.sum())
        out_scores.append(float(scores[top]))
        remaining = remaining[overlap <= iou_threshold]
        remaining = remaining[remaining != top]
    return np.stack(out_boxes).astype(np.float32), np.asarray(out_scores, np.float32)
