"""Our BlazeFace decoding against MediaPipe's own face_detection solution (the oracle).

MediaPipe 0.10.21 ships its own copies of the short-range and full-range (sparse) models.
We run *our* anchors, decoding, weighted NMS and letterbox removal on *those* files and
require the same faces as MediaPipe's graph: boxes within 2 px, scores within 0.02, at the
same threshold. Images are made at the model's input width, so neither side resizes
(MediaPipe's resampler and ours differ; decoding is what is under test), and one is
letterboxed to test the padding removal.

Runs in the tflite-runtime environment (mediapipe pins numpy<2): `make test` does that.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeguard import models
from edgeguard.detect import blazeface as bf
from edgeguard.detect.detector import DetectParams, FaceDetector
from edgeguard.detect.planner import PlanParams
from edgeguard.detect.runtime import ModelRunner

pytestmark = pytest.mark.oracle

if os.environ.get("EDGEGUARD_REQUIRE_ORACLE") == "1":
    import mediapipe as mp  # must be there: a skip would hide a missing check
else:
    mp = pytest.importorskip("mediapipe", reason="MediaPipe oracle lives in .venv-tflite")

THRESHOLD = 0.5
CASES = [(0, "face_detection_short_range.tflite", "short"),
         (1, "face_detection_full_range_sparse.tflite", "full")]


def _mp_model(file: str) -> Path:
    return Path(mp.__file__).parent / "modules" / "face_detection" / file


def _ours(file: str, anchors_from: str) -> FaceDetector:
    spec = models.load_manifest().models[anchors_from]
    runner = ModelRunner(_mp_model(file), spec.input_size, spec.num_boxes, threads=1)
    size = spec.input_size
    plan = PlanParams(whole_model="m", whole_size=size, whole_face_lo=1.0, tile_model="m",
                      tile_size=size, min_face=1e9, face_lo=1.0, face_hi=2.0, max_upscale=1.0)
    params = DetectParams(plan=plan, min_score=THRESHOLD, candidate_score=THRESHOLD,
                          nms_iou=0.3, flat_std=0.0)
    return FaceDetector({"m": runner}, {"m": bf.generate_anchors(spec.anchors)},
                        {"m": size}, params)


def _images(astronaut: np.ndarray, size: int) -> list[np.ndarray]:
    """Square and letterboxed views with real faces, already at the model's input width."""
    face = astronaut[0:260, 110:330]  # head and shoulders
    square = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA)
    # two people side by side, wider than tall: letterboxed top and bottom
    pair = np.hstack([face, cv2.flip(face, 1)])
    height = size * pair.shape[0] // pair.shape[1]
    height -= (size - height) % 2  # even padding: MediaPipe centres it on whole pixels then
    wide = cv2.resize(pair, (size, height), interpolation=cv2.INTER_AREA)
    # one face off-centre on a grey field
    off = np.full((size, size, 3), 128, np.uint8)
    small = cv2.resize(face, (size // 2, size * 260 // 220 // 2), interpolation=cv2.INTER_AREA)
    off[size - small.shape[0]:, :small.shape[1]] = small
    return [square, wide, off]


@pytest.mark.parametrize(("selection", "file", "anchors_from"), CASES)
def test_matches_mediapipe(astronaut_rgb: np.ndarray, selection: int, file: str,
                           anchors_from: str) -> None:
    ours = _ours(file, anchors_from)
    size = models.load_manifest().models[anchors_from].input_size
    compared = 0
    with mp.solutions.face_detection.FaceDetection(
            model_selection=selection, min_detection_confidence=THRESHOLD) as oracle:
        for img in _images(astronaut_rgb, size):
            h, w = img.shape[:2]
            res = oracle.process(img)
            theirs = []
            for d in res.detections or []:
                b = d.location_data.relative_bounding_box
                theirs.append(([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w,
                                (b.ymin + b.height) * h], d.score[0]))
            mine = [(det.box.as_list(), det.score) for det in ours.detect(img)]
            assert len(mine) == len(theirs), (mine, theirs)
            for (tb, ts) in theirs:
                best = min(mine, key=lambda m: np.abs(np.subtract(m[0], tb)).max())
                assert np.abs(np.subtract(best[0], tb)).max() <= 2.0, (best, tb)
                assert abs(best[1] - ts) <= 0.02, (best[1], ts)
                compared += 1
    assert compared >= 3  # the check compared real faces, not two empty lists
