"""The face detector: runs the planned views through the cached interpreters and merges.

Takes an RGB uint8 (H, W, 3) array, returns a list of detections in source pixels
(empty when there are none, never None); anything else in is a ValueError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from edgeguard.detect import blazeface as bf
from edgeguard.detect.planner import Level, PlanParams, merge, plan, tile_is_flat
from edgeguard.geometry import Box, Detection

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """What the detector needs of a model: raw outputs for one input (see ModelRunner)."""

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class DetectParams:
    plan: PlanParams
    min_score: float  # kept faces score at least this (after merging)
    candidate_score: float  # per-view anchors scoring this are merged (<= min_score)
    nms_iou: float
    flat_std: float  # skip tiles whose grey std (on a small copy) is below; 0 disables
    verify_model: str = ""  # second-opinion model for low-scoring faces ("" disables)
    accept_score: float = 1.0  # merged faces scoring this are kept without a second opinion
    verify_score: float = 0.5  # the second opinion must score this
    verify_face: float = 32.0  # face size (input px) in the verification view


@dataclass
class DetectStats:
    views_planned: int = 0
    views_run: int = 0
    levels: int = 0
    ms: dict[str, float] = field(default_factory=dict)


class FaceDetector:
    """Multi-scale BlazeFace over cached interpreters (one per model, created elsewhere once)."""

    def __init__(self, runners: Mapping[str, Runner], anchors: Mapping[str, np.ndarray],
                 sizes: Mapping[str, int], params: DetectParams) -> None:
        needed = [params.plan.whole_model, params.plan.tile_model]
        if params.verify_model:
            needed.append(params.verify_model)
        for name in needed:
            if name not in runners:
                raise ValueError(f"no runner for model {name!r}")
        self._runners = dict(runners)
        self._anchors = dict(anchors)
        self._sizes = dict(sizes)
        self.params = params
        self.last_stats = DetectStats()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
                or rgb.dtype != np.uint8:
            raise ValueError("expected an RGB uint8 array of shape (H, W, 3)")
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("empty image")
        stats = DetectStats()
        t0 = time.perf_counter()
        levels = plan(w, h, self.params.plan)
        stats.levels = len(levels)
        images = _pyramid(rgb, levels)
        t1 = time.perf_counter()
        all_boxes: list[np.ndarray] = []
        all_scores: list[np.ndarray] = []
        for level, image in zip(levels, images):
            boxes, scores = self._run_level(level, image, stats)
            all_boxes.extend(boxes)
            all_scores.extend(scores)
        t2 = time.perf_counter()
        if all_boxes:
            boxes = np.concatenate(all_boxes)
            scores = np.concatenate(all_scores)
            boxes, scores = merge(boxes, scores, self.params.nms_iou)
            keep = scores >= self.params.min_score
            boxes, scores = boxes[keep], scores[keep]
            if self.params.verify_model:
                boxes, scores = self._verify(rgb, boxes, scores, stats)
        else:
            boxes = np.zeros((0, bf.NUM_COORDS), np.float32)
            scores = np.zeros((0,), np.float32)
        t3 = time.perf_counter()
        stats.ms = {"resize": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                    "merge": (t3 - t2) * 1e3}
        self.last_stats = stats
        return [
            Detection(
                Box(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                float(s),
                tuple((float(b[4 + 2 * k]), float(b[5 + 2 * k])) for k in range(bf.NUM_KEYPOINTS)),
            )
            for b, s in zip(boxes, scores)
        ]

    def _verify(self, rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                stats: DetectStats) -> tuple[np.ndarray, np.ndarray]:
        """Second opinion on low-scoring faces: a view centred on each, with the face at
        ``verify_face`` input pixels, through ``verify_model``; kept only if it agrees."""
        p = self.params
        runner = self._runners[p.verify_model]
        anchors = self._anchors[p.verify_model]
        size = self._sizes[p.verify_model]
        keep = np.ones(len(scores), bool)
        buf = np.zeros((size, size, 3), np.uint8)
        for i, (b, sc) in enumerate(zip(boxes, scores)):
            if sc >= p.accept_score:
                continue
            face = max(b[2] - b[0], b[3] - b[1])
            side = face * size / p.verify_face  # source px covered by the view
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            x0, y0 = cx - side / 2, cy - side / 2
            # crop (with padding) the square [x0, x0+side) and resize it to the input
            ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
            iside = int(np.ceil(side)) + 1
            crop = _crop_into(rgb, ix0, iy0, iside, np.zeros((iside, iside, 3), np.uint8))
            view = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA
                              if iside > size else cv2.INTER_LINEAR, dst=buf)
            stats.views_run += 1
            raw_b, raw_s = runner(view)
            vb, vs = bf.candidates(raw_b, raw_s, anchors, size, p.verify_score)
            if vb.shape[0] == 0:
                keep[i] = False
                continue
            vb = vb[:, :4] * iside  # normalised view -> crop pixels
            vb[:, 0::2] += ix0
            vb[:, 1::2] += iy0
            if float(bf.iou_one_to_many(b[:4], vb).max()) <= p.nms_iou:
                keep[i] = False
        return boxes[keep], scores[keep]

    def _run_level(self, level: Level, image: np.ndarray,
                   stats: DetectStats) -> tuple[list[np.ndarray], list[np.ndarray]]:
        runner = self._runners[level.model]
        anchors = self._anchors[level.model]
        size = level.size
        out_b: list[np.ndarray] = []
        out_s: list[np.ndarray] = []
        grey_small = factor = None
        if level.index > 0 and self.params.flat_std > 0 and len(level.tiles) > 1:
            factor = 4.0
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            grey_small = cv2.resize(grey, (max(1, round(level.width / factor)),
                                           max(1, round(level.height / factor))),
                                    interpolation=cv2.INTER_AREA)
        buf = np.zeros((size, size, 3), np.uint8)
        for x, y in level.tiles:
            stats.views_planned += 1
            if grey_small is not None and factor is not None and tile_is_flat(
                    grey_small, factor, x, y, size, self.params.flat_std):
                continue
            stats.views_run += 1
            view = _crop_into(image, x, y, size, buf)
            raw_boxes, raw_scores = runner(view)
            boxes, scores = bf.candidates(raw_boxes, raw_scores, anchors, size,
                                          self.params.candidate_score)
            if boxes.shape[0] == 0:
                continue
            # normalised view coords -> level pixels -> source pixels
            boxes = boxes * size
            boxes[:, 0::2] += x
            boxes[:, 1::2] += y
            boxes /= level.scale
            out_b.append(boxes)
            out_s.append(scores)
        return out_b, out_s


def _pyramid(rgb: np.ndarray, levels: list[Level]) -> list[np.ndarray]:
    """Each level's image; finer levels are made first, coarser ones from the next finer
    (INTER_AREA), so the full-resolution frame is read about once."""
    out: list[np.ndarray | None] = [None] * len(levels)
    src, src_scale = rgb, 1.0
    for i in sorted(range(len(levels)), key=lambda k: -levels[k].scale):
        lv = levels[i]
        if abs(lv.scale - 1.0) < 1e-9 and src is rgb:
            out[i] = rgb
            continue
        interp = cv2.INTER_AREA if lv.scale < src_scale else cv2.INTER_LINEAR
        img = cv2.resize(src, (lv.width, lv.height), interpolation=interp)
        out[i] = img
        if lv.scale < 1.0:
            src, src_scale = img, lv.scale
    return [o for o in out if o is not None]


def _crop_into(image: np.ndarray, x: int, y: int, size: int, buf: np.ndarray) -> np.ndarray:
    """The ``size`` square at (x, y) of ``image``; parts outside are black. Reuses ``buf``."""
    h, w = image.shape[:2]
    if x >= 0 and y >= 0 and x + size <= w and y + size <= h:
        return np.ascontiguousarray(image[y:y + size, x:x + size])
    buf[:] = 0
    sx1, sy1 = max(0, x), max(0, y)
    sx2, sy2 = min(w, x + size), min(h, y + size)
    buf[sy1 - y:sy2 - y, sx1 - x:sx2 - x] = image[sy1:sy2, sx1:sx2]
    return buf
