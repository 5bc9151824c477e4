"""The real models on real faces: the multi-scale search finds small faces a whole-frame
pass misses, keeps quiet on faceless pictures, and rejects bad input.

Needs the models (`edgeguard models fetch`); faces come from scikit-image's bundled
public-domain astronaut portrait, pasted at group-photo sizes onto real textures.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from edgeguard import config, models
from edgeguard.detect.detector import FaceDetector
from edgeguard.detect.profiles import PROFILES
from edgeguard.redact import region_for
from edgeguard.tally import tally

PROFILE_NAMES = tuple(PROFILES)


@pytest.fixture(scope="module")
def pipeline_for():  # type: ignore[no-untyped-def]
    from edgeguard.pipeline import Pipeline

    mdir = models.default_models_dir()
    if not all((mdir / m.file).is_file() for m in models.load_manifest().models.values()):
        pytest.skip("models not fetched (edgeguard models fetch)")
    cache: dict[str, Pipeline] = {}

    def get(profile: str) -> Pipeline:
        if profile not in cache:
            cfg = config.override(config.Config(), "detect", profile=profile, threads=2)
            cache[profile] = Pipeline(cfg)
        return cache[profile]

    return get


@pytest.fixture(scope="module")
def detector(pipeline_for) -> FaceDetector:  # type: ignore[no-untyped-def]
    """The profile that runs BlazeFace's whole multi-scale plan (beside CenterFace)."""
    det: FaceDetector = pipeline_for("thorough").detector
    return det


# The astronaut's face (x1, y1, x2, y2) in the 512x512 portrait, as annotated by hand
# (forehead to chin, ear to ear minus hair).
ASTRONAUT_FACE = (170, 60, 260, 180)


def _protected(face: tuple[float, float, float, float], regions: list) -> bool:  # type: ignore[type-arg]
    """The eval's rule: at least 70% of the face box is redacted."""
    x1, y1, x2, y2 = (round(v) for v in face)
    mask = np.zeros((y2 - y1, x2 - x1), bool)
    for r in regions:
        mask[max(0, r.y1 - y1):max(0, r.y2 - y1), max(0, r.x1 - x1):max(0, r.x2 - x1)] = True
    return float(mask.mean()) >= 0.7


def _regions(dets, w: int, h: int) -> list:  # type: ignore[no-untyped-def,type-arg]
    out = [region_for(d.box, expand=1.3, width=w, height=h) for d in dets]
    return [r for r in out if r is not None]


def test_astronaut_found_with_the_right_box(detector: FaceDetector,
                                            astronaut_rgb: np.ndarray) -> None:
    dets = detector.detect(astronaut_rgb)
    d = max(dets, key=lambda x: x.score)
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    assert d.score > 0.8
    assert abs(d.box.x1 - fx1) < 20 and abs(d.box.x2 - fx2) < 25
    assert abs(d.box.y1 - fy1) < 30 and abs(d.box.y2 - fy2) < 25
    assert _protected(ASTRONAUT_FACE, _regions(dets, 512, 512))
    assert len(d.keypoints) == 6
    rx, ry = d.keypoints[0]  # the subject's right eye: left of her left eye in the image
    lx, _ = d.keypoints[1]
    assert rx < lx and fy1 < ry < (fy1 + fy2) / 2
    # the second model finds the same face (its own box, its own region); the low
    # thresholds cost a few weak stray boxes elsewhere, none of which looks like a face
    cx, cy = d.box.center
    same = [o for o in dets if o.box.x1 < cx < o.box.x2 and o.box.y1 < cy < o.box.y2]
    assert 1 <= len(same) <= 2
    assert all(o.score < STRAY_MAX for o in dets if o not in same)


# Measured: false detections on faceless photos and textures score up to 0.62 (0.72 once,
# on a 4x enlarged photo); the pasted real faces mostly 0.8-0.95 (0.63 at 21 px).
STRAY_MAX = 0.75


def _background(w: int, h: int) -> np.ndarray:
    """Real photographic texture with no faces: coffee and rocket tiles."""
    from skimage import data

    tiles = [cv2.resize(data.coffee(), (400, 267)), cv2.resize(data.rocket(), (400, 267))]
    row = np.concatenate(tiles * (w // 800 + 1), axis=1)[:, :w]
    rows = [row if i % 2 == 0 else row[:, ::-1] for i in range(h // 267 + 1)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:h])


def _group_photo(astronaut: np.ndarray, w: int, h: int, sizes: list[int],
                 seed: int = 4) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """``sizes`` astronaut heads (with shoulders) pasted at face heights ``sizes``, on a
    grid with jitter so faces fall at arbitrary positions relative to any tile grid."""
    rng = np.random.default_rng(seed)
    canvas = _background(w, h)
    crop_box = (100, 10, 340, 300)  # head and shoulders around ASTRONAUT_FACE
    crop = astronaut[crop_box[1]:crop_box[3], crop_box[0]:crop_box[2]]
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    cols = 5
    rows = (len(sizes) + cols - 1) // cols
    cw, ch = w // cols, h // rows
    faces = []
    for i, face_h in enumerate(sizes):
        s = face_h / (fy2 - fy1)
        pw, ph = round(crop.shape[1] * s), round(crop.shape[0] * s)
        patch = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_AREA)
        cx, cy = (i % cols) * cw, (i // cols) * ch
        x = cx + int(rng.integers(0, max(1, cw - pw)))
        y = cy + int(rng.integers(0, max(1, ch - ph)))
        canvas[y:y + ph, x:x + pw] = patch
        faces.append((x + (fx1 - crop_box[0]) * s, y + (fy1 - crop_box[1]) * s,
                      x + (fx2 - crop_box[0]) * s, y + (fy2 - crop_box[1]) * s))
    return canvas, faces


SMALL_FACES = [24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 70, 76, 84, 90, 96, 104, 110, 116, 120]


def test_multiscale_search_protects_small_faces_a_whole_frame_pass_misses(
        detector: FaceDetector, astronaut_rgb: np.ndarray) -> None:
    w, h = 3000, 2000
    canvas, faces = _group_photo(astronaut_rgb, w, h, SMALL_FACES)
    dets = detector.detect(canvas)
    regions = _regions(dets, w, h)
    found = sum(_protected(f, regions) for f in faces)
    assert found >= len(faces) - 1, f"{found}/{len(faces)} protected"
    # strays: detections holding no face centre (a face's box can grow to the union with
    # a coarser level's larger box around the same head: that is not a stray)
    stray = [d for d in dets if not any(
        d.box.x1 <= (f[0] + f[2]) / 2 <= d.box.x2 and d.box.y1 <= (f[1] + f[3]) / 2 <= d.box.y2
        for f in faces)]
    assert all(d.score < STRAY_MAX for d in stray)
    assert detector.last_stats.views_run > 10  # it did search

    whole_only = FaceDetector(detector._runners, detector._anchors, detector._sizes,
                              dataclasses.replace(detector.params, second=None,
                                                  plan=dataclasses.replace(
                                  detector.params.plan, min_face=1e9, max_views=0.0)))
    dets1 = whole_only.detect(canvas)
    assert whole_only.last_stats.views_run == 1
    found1 = sum(_protected(f, _regions(dets1, w, h)) for f in faces)
    assert found1 <= len(faces) // 4, f"whole frame alone protected {found1}"


# Measured false detections on the native-size photos (coffee 400x600, rocket 427x640):
# fast 0 and 0, balanced 0 and 3, thorough 6 and 26: the price of the low thresholds that
# masked and turned faces need (README). Bounds a little above, so a looser search fails.
FACELESS_MAX = {"fast": 2, "balanced": 6, "thorough": 35}


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_few_weak_detections_on_faceless_pictures(pipeline_for,  # type: ignore[no-untyped-def]
                                                  profile: str, name: str) -> None:
    from skimage import data

    det = pipeline_for(profile).detector
    dets = det.detect(np.ascontiguousarray(getattr(data, name)()))
    assert isinstance(dets, list) and len(dets) <= FACELESS_MAX[profile]
    assert all(d.score < STRAY_MAX for d in dets)


def test_faceless_textured_canvas_has_no_face_like_detections(detector: FaceDetector) -> None:
    canvas = _background(3000, 2000)
    dets = detector.detect(canvas)
    assert detector.last_stats.views_run > 10
    assert isinstance(dets, list) and all(d.score < STRAY_MAX for d in dets)


def test_flat_image_gives_an_empty_list_not_none(detector: FaceDetector) -> None:
    for shape in [(1, 1, 3), (30, 2000, 3), (1500, 2000, 3)]:
        dets = detector.detect(np.full(shape, 90, np.uint8))
        assert dets == []


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.uint8),
    np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32),
    np.zeros((0, 10, 3), np.uint8),
    [[0, 0, 0]],
])
def test_bad_input_is_a_value_error(detector: FaceDetector, bad: object) -> None:
    with pytest.raises(ValueError):
        detector.detect(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_every_profile_finds_the_astronaut(pipeline_for, profile: str,  # type: ignore[no-untyped-def]
                                           astronaut_rgb: np.ndarray) -> None:
    dets, regions = pipeline_for(profile).find(astronaut_rgb)
    assert _protected(ASTRONAUT_FACE, regions)
    assert tally([d for d in dets if d.score >= STRAY_MAX]).faces == 1  # one face, counted once


def _masked_astronaut(astronaut: np.ndarray, colour: tuple[int, int, int],
                      blur: float) -> np.ndarray:
    """The astronaut wearing a pleated face mask from just under the eyes to below the
    chin (the way the masked crowds of the dev sets look to a detector), optionally
    out of focus."""
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    out = astronaut.copy()
    top = fy1 + 40
    pts = np.array([[fx1 - 6, top], [fx2 + 6, top], [fx2 + 2, fy2 + 6],
                    [(fx1 + fx2) // 2, fy2 + 16], [fx1 - 2, fy2 + 6]], np.int32)
    cv2.fillPoly(out, [pts], colour)
    pleat = tuple(int(c * 0.85) for c in colour)
    for k in range(3):
        cv2.line(out, (fx1, top + 12 + 14 * k), (fx2, top + 12 + 14 * k), pleat, 2)
    return cv2.GaussianBlur(out, (0, 0), blur) if blur else out


MASKED_FACES = [32, 36, 40, 46, 52, 58, 64, 72, 80, 90]


def test_the_second_model_protects_masked_faces_blazeface_alone_misses(
        pipeline_for, astronaut_rgb: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    looks = [((196, 214, 232), 0.0), ((40, 40, 50), 0.0), ((196, 214, 232), 2.0),
             ((40, 40, 50), 2.0)]
    w, h = 1000, 500  # half a megapixel: the second model sees it at full size
    canvas = _background(w, h)
    rng = np.random.default_rng(11)
    crop_box = (100, 10, 340, 300)
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    faces = []
    for i, face_h in enumerate(MASKED_FACES):
        colour, blur = looks[i % len(looks)]
        masked = _masked_astronaut(astronaut_rgb, colour, blur)
        crop = masked[crop_box[1]:crop_box[3], crop_box[0]:crop_box[2]]
        s = face_h / (fy2 - fy1)
        patch = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        ph, pw = patch.shape[:2]
        cw, ch = w // 5, h // 2
        x = (i % 5) * cw + int(rng.integers(0, cw - pw))
        y = (i // 5) * ch + int(rng.integers(0, ch - ph))
        canvas[y:y + ph, x:x + pw] = patch
        faces.append((x + (fx1 - crop_box[0]) * s, y + (fy1 - crop_box[1]) * s,
                      x + (fx2 - crop_box[0]) * s, y + (fy2 - crop_box[1]) * s))
    combined = pipeline_for("balanced")
    _, regions = combined.find(canvas)
    both = sum(_protected(f, regions) for f in faces)
    assert combined.detector.last_stats.second_scale > 0  # the second model ran
    alone = FaceDetector(combined.detector._runners, combined.detector._anchors,
                         combined.detector._sizes,
                         dataclasses.replace(combined.detector.params, second=None))
    only_bf = sum(_protected(f, _regions(alone.detect(canvas), w, h)) for f in faces)
    assert both >= len(faces) - 1, f"combined search protected {both}/{len(faces)}"
    assert only_bf <= len(faces) // 2, f"BlazeFace alone protected {only_bf}"
