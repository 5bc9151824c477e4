"""The TFLite adapter and the one-interpreter-per-model invariant, on the real runtime.

These run twice under `make test`: in .venv with ai_edge_litert and in .venv-tflite with
tflite_runtime 2.14 (pytest --runtime=tflite, see conftest.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeguard import config, models
from edgeguard.detect import runtime
from edgeguard.errors import ModelError
from edgeguard.pipeline import Pipeline
from edgeguard.tally import tally

pytestmark = pytest.mark.tflite

EXPECTED = {"tflite": "tflite_runtime", "litert": "ai_edge_litert"}


def test_runtime_is_the_one_asked_for(runtime_choice: str) -> None:
    cfg = config.override(config.Config(), "detect", runtime=runtime_choice)
    assert Pipeline(cfg).runtime_name == EXPECTED.get(runtime_choice, "ai_edge_litert")


def test_one_interpreter_per_model_created_once(astronaut_rgb: np.ndarray,
                                               monkeypatch: pytest.MonkeyPatch,
                                               interpreters: list[str]) -> None:
    import cv2

    nets: list[str] = []
    real_read = cv2.dnn.readNetFromONNX

    def counting_read(path: str) -> object:  # the real loader, counted
        nets.append(path)
        return real_read(path)

    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", counting_read)
    pipe = Pipeline(config.Config())
    assert [Path(n).name for n in nets] == ["centerface.onnx"]  # the default runs both
    used = {pipe.detector.params.plan.whole_model, pipe.detector.params.plan.tile_model}
    man = models.load_manifest()
    assert sorted(Path(p).name for p in interpreters) == sorted(man.models[n].file
                                                                for n in used)
    created = len(interpreters)
    big = np.zeros((1500, 2000, 3), np.uint8)
    big[:512, :512] = astronaut_rgb
    for frame in (astronaut_rgb.copy(), big, astronaut_rgb[::2, ::2].copy()):
        pipe.redact_frame(frame)
    assert len(interpreters) == created  # none per image or per view
    assert len(nets) == 1
    # a config change that leaves detection alone reuses the interpreters
    cfg2 = config.override(config.Config(), "redact", mode="solid")
    pipe2 = pipe.with_config(cfg2)
    assert len(interpreters) == created
    assert pipe2.detector is pipe.detector


def test_only_the_start_up_pipeline_redirects_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    # fd 2 is the whole process's: a reload's rebuild runs beside workers whose log lines a
    # redirect would swallow, so only the commands' first pipeline may hide the banner.
    redirected: list[int] = []
    real_dup2 = os.dup2

    def dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
        redirected.append(fd2)
        return real_dup2(fd, fd2, inheritable)

    monkeypatch.setattr(os, "dup2", dup2)
    pipe = Pipeline(config.Config(), at_start_up=True)
    assert 2 in redirected
    redirected.clear()
    rebuilt = pipe.with_config(config.override(config.Config(), "detect", threads=1))
    assert rebuilt.detector is not pipe.detector  # new interpreters, stderr left alone
    assert redirected == []


def test_finds_the_astronaut(astronaut_rgb: np.ndarray) -> None:
    pipe = Pipeline(config.Config())
    dets, regions = pipe.find(astronaut_rgb)
    # The default profile redacts weak candidates too (privacy first): the face is the
    # best-scoring one (found by both models, counted once), and the strays are weak.
    assert tally(dets).faces == 1
    best = max(range(len(dets)), key=lambda i: dets[i].score)
    box = dets[best].box
    # Eileen Collins' face: eyes at y ~ 100, mouth ~ 145, centred near x 225
    assert 200 < box.center[0] < 250 and 100 < box.center[1] < 140
    assert 80 < box.width < 140 and dets[best].score > 0.8
    cx, cy = box.center
    strays = [d for d in dets if not (d.box.x1 < cx < d.box.x2 and d.box.y1 < cy < d.box.y2)]
    assert all(d.score < 0.7 and d.weak for d in strays)
    r = regions[best]
    assert r.x1 <= box.x1 and r.y1 <= box.y1 and r.x2 >= box.x2 and r.y2 >= box.y2


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    cfg = config.override(config.Config(), "detect", models_dir=str(tmp_path))
    with pytest.raises(ModelError, match=r"missing: .*edgeguard models fetch"):
        Pipeline(cfg)


def test_altered_model_is_refused(tmp_path: Path) -> None:
    src = models.default_models_dir()
    for spec in models.load_manifest().models.values():
        shutil.copy(src / spec.file, tmp_path / spec.file)
    victim = tmp_path / models.load_manifest().models["full"].file
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    cfg = config.override(config.Config(), "detect", models_dir=str(tmp_path))
    with pytest.raises(ModelError, match="altered"):
        Pipeline(cfg)


def test_unloadable_model_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot be loaded"):
        runtime.ModelRunner(bad, 128, 896)


def test_runner_rejects_wrong_input() -> None:
    spec = models.load_manifest().models["short"]
    r = runtime.ModelRunner(models.default_models_dir() / spec.file, 128, 896, threads=1)
    with pytest.raises(ValueError):
        r(np.zeros((64, 64, 3), np.uint8))
    boxes, scores = r(np.zeros((128, 128, 3), np.uint8))
    assert boxes.shape == (896, 16) and scores.shape == (896, 1)
