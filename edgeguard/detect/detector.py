"""The face detector: runs the planned views through the cached models and merges.

Two models with different architectures and training sets search each frame:
BlazeFace (TFLite) on the planner's multi-scale views, cheap per view and precise on open
faces; and, where the profile names it, CenterFace (ONNX in OpenCV's DNN) once on the whole
frame at a scale chosen from its size, which finds the masked, turned and blurred faces
BlazeFace scores low. Each model's detections are kept with their own boxes, so each
gives its own region: merging a face's two boxes into their union before the region rule
grows every region (measured: +5 points of excess on a 12 MP set for no protection).
Counting one face once is the counters' job (edgeguard.tally).

Takes an RGB uint8 (H, W, 3) array, returns a list of detections in source pixels
(empty when there are none, never None); anything else in is a ValueError.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
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


class WholeFrameRunner(Protocol):
    """What the detector needs of the second model (see dnn.CenterFaceRunner): boxes
    (N, >= 4) in source pixels and scores for a whole frame shown at ``scale``."""

    def detect(self, rgb: np.ndarray, *, scale: float, threshold: float, max_pixels: float,
               overlap: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class SecondParams:
    """How the second model searches: once on the whole frame, shown at ``megapixels``
    but at no scale below ``min_scale`` (which sets the smallest face it finds: CenterFace
    finds faces from about 8-10 of its input pixels) nor above ``max_scale``."""

    score: float  # its detections scoring this are kept
    megapixels: float  # the frame is shown to it at about this many megapixels ...
    min_scale: float  # ... but at this scale at least ...
    max_scale: float  # ... and at this scale at most (> 1 enlarges small frames)
    box_scale: float  # its boxes grow by this about their centre ...
    box_shift: float  # ... and move down by this share of their height (see README)
    tile_pixels: float = float("inf")  # larger inputs go in tiles of at most this size
    tile_overlap: int = 96  # ... overlapping by this many of its input pixels

    def scale_for(self, width: int, height: int) -> float:
        s = math.sqrt(self.megapixels * 1e6 / (width * height))
        return min(self.max_scale, max(self.min_scale, s))


@dataclass(frozen=True, slots=True)
class DetectParams:
    plan: PlanParams
    min_score: float  # merged faces scoring this are kept
    candidate_score: float  # per-view anchors scoring this are merged (<= min_score)
    nms_iou: float
    flat_std: float  # skip tiles whose grey std (on a small copy) is below; 0 disables
    second: SecondParams | None = None  # the second model's search; None: BlazeFace only
    solo_min_score: float = 0.0  # merged faces scoring this are kept where BlazeFace
    # searches alone (detect_levels: the camera); 0: min_score
    face_score: float = 0.5  # detections scoring this are counted as faces; the rest
    # (kept privacy-first, down to min_score / second.score) as weak regions


@dataclass
class DetectStats:
    views_planned: int = 0
    views_run: int = 0
    levels: int = 0
    second_scale: float = 0.0  # the scale the second model saw the frame at (0: not run)
    ms: dict[str, float] = field(default_factory=dict)


def _detection(box: np.ndarray, score: float, keypoints: np.ndarray, weak: bool) -> Detection:
    return Detection(
        Box(float(box[0]), float(box[1]), float(box[2]), float(box[3])), float(score),
        tuple((float(keypoints[2 * k]), float(keypoints[2 * k + 1]))
              for k in range(len(keypoints) // 2)),
        weak=bool(weak))


def _checked(rgb: np.ndarray) -> tuple[int, int]:
    """(height, width) of an RGB uint8 frame; ValueError for anything else or an empty one."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8:
        raise ValueError("expected an RGB uint8 array of shape (H, W, 3)")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("empty image")
    return h, w


def _calibrated(box: np.ndarray, factor: float, shift: float) -> np.ndarray:
    """``box`` scaled by ``factor`` about its centre and moved down by ``shift`` times its
    height: a model's box mapped onto the face as annotators draw it (measured, README)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    cy += shift * (box[3] - box[1])
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


class FaceDetector:
    """Multi-scale BlazeFace over cached interpreters, and the second model beside it when
    the parameters name one (every model's interpreter or network created once, elsewhere)."""

    def __init__(self, runners: Mapping[str, Runner], anchors: Mapping[str, np.ndarray],
                 sizes: Mapping[str, int], params: DetectParams,
                 second: WholeFrameRunner | None = None) -> None:
        for name in (params.plan.whole_model, params.plan.tile_model):
            if name not in runners:
                raise ValueError(f"no runner for model {name!r}")
        if (params.second is None) != (second is None):
            raise ValueError("the second model's runner and parameters go together")
        self._runners = dict(runners)
        self._second = second
        self._anchors = dict(anchors)
        self._sizes = dict(sizes)
        self.params = params
        self._local = threading.local()

    @property
    def last_stats(self) -> DetectStats:
        """Statistics of the last :meth:`detect` call made by the calling thread."""
        stats: DetectStats = getattr(self._local, "stats", None) or DetectStats()
        return stats

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = _checked(rgb)
        stats = DetectStats()
        t0 = time.perf_counter()
        levels = plan(w, h, self.params.plan)
        stats.levels = len(levels)
        images = _pyramid(rgb, levels)
        t1 = time.perf_counter()
        p = self.params
        found = self._merged(self._run_levels(levels, images, stats), p.min_score)
        del images
        t2 = time.perf_counter()
        if self._second is not None and p.second is not None:
            sp = p.second
            stats.second_scale = sp.scale_for(w, h)
            cboxes, cscores = self._second.detect(
                rgb, scale=stats.second_scale, threshold=sp.score,
                max_pixels=sp.tile_pixels, overlap=sp.tile_overlap)
            found += [_detection(_calibrated(b[:4], sp.box_scale, sp.box_shift), s, b[4:],
                                 s < p.face_score)
                      for b, s in zip(cboxes, cscores, strict=True)]
        t3 = time.perf_counter()
        stats.ms = {"resize": (t1 - t0) * 1e3, "infer_merge": (t2 - t1) * 1e3,
                    "second": (t3 - t2) * 1e3}
        self._local.stats = stats
        return found

    def detect_levels(self, rgb: np.ndarray, levels: Sequence[Level]) -> list[Detection]:
        """Faces in ``rgb`` from the given levels only (each may list a subset of its
        tiles), merged as :meth:`detect` merges but at ``solo_min_score``: BlazeFace
        searches alone here, without the second model. The camera spreads one frame's plan
        over several frames with it (a sweep) and searches main-resolution crops;
        ``levels`` come from :func:`~edgeguard.detect.planner.plan` for this frame's size."""
        _checked(rgb)
        stats = DetectStats(levels=len(levels))
        raw = self._run_levels(levels, _pyramid(rgb, levels), stats)
        self._local.stats = stats
        p = self.params
        solo = p.solo_min_score or p.min_score
        return self._merged(raw, solo)

    def _run_levels(self, levels: Sequence[Level], images: Sequence[np.ndarray],
                    stats: DetectStats) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every view's candidates (boxes, scores) in source pixels, before merging."""
        all_boxes: list[np.ndarray] = []
        all_scores: list[np.ndarray] = []
        for level, image in zip(levels, images, strict=True):
            level_boxes, level_scores = self._run_level(level, image, stats)
            all_boxes.extend(level_boxes)
            all_scores.extend(level_scores)
        return all_boxes, all_scores

    def _merged(self, raw: tuple[list[np.ndarray], list[np.ndarray]],
                min_score: float) -> list[Detection]:
        """The views' candidates merged into faces (see planner.merge) at ``min_score``."""
        boxes, scores = raw
        if not boxes:
            return []
        p = self.params
        kb, ks = merge(np.concatenate(boxes), np.concatenate(scores), p.nms_iou,
                       min_score=min_score)
        return [_detection(b[:4], s, b[4:], s < p.face_score)
                for b, s in zip(kb, ks, strict=True)]

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


def _pyramid(rgb: np.ndarray, levels: Sequence[Level]) -> list[np.ndarray]:
    """Each level's image; finer levels are made first, coarser ones from the next finer,
    so the full-resolution frame is read about once."""
    out: list[np.ndarray | None] = [None] * len(levels)
    src = rgb
    for i in sorted(range(len(levels)), key=lambda k: -levels[k].scale):
        lv = levels[i]
        if abs(lv.scale - 1.0) < 1e-9 and src is rgb:
            out[i] = rgb
            continue
        img = _resize(src, lv.width, lv.height)
        out[i] = img
        if lv.scale < 1.0:
            src = img
    return [o for o in out if o is not None]


def _resize(src: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize for detection. Shrinking averages pixels (INTER_AREA), by a whole factor
    first when it is 2x or more (a few ms on 12 MP, where a fractional INTER_AREA costs
    ~55 ms of CPU); enlarging is bilinear. Bilinear for the last fractional shrink would
    save ~45 ms per 12 MP frame but measured 0.4-0.8 points less protection: not taken."""
    h, w = src.shape[:2]
    k = min(w // max(1, width), h // max(1, height))
    if k >= 2:
        src = cv2.resize(src, (w // k, h // k), interpolation=cv2.INTER_AREA)
        h, w = src.shape[:2]
    if (w, h) == (width, height):
        return src
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(src, (width, height), interpolation=interp)


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
