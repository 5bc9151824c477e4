"""The one adapter to the TFLite runtime: ai_edge_litert if installed, else tflite_runtime.

Imported lazily (no runtime import at module import). Each model gets exactly one
interpreter, created once by :class:`ModelRunner`; inference on it is serialised by a
lock, since a TFLite interpreter is not thread-safe. Parallelism comes from the
interpreter's own threads and from decode/encode running beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard.detect.blazeface import NUM_COORDS
from edgeguard.errors import DetectionError, ModelError, RuntimeUnavailableError

logger = logging.getLogger(__name__)


def interpreter_class(runtime: str = "auto") -> tuple[str, Any]:
    """(name, Interpreter class) of the runtime to use.

    ``runtime`` is the config's ``detect.runtime``: ``auto`` prefers ai_edge_litert
    (maintained), then tflite_runtime (frozen at 2.14), like Frigate's one-line fallback.
    """
    if runtime in ("auto", "litert"):
        try:
            from ai_edge_litert.interpreter import Interpreter

            return "ai_edge_litert", Interpreter
        except ImportError:
            if runtime == "litert":
                raise RuntimeUnavailableError(
                    "ai_edge_litert is not installed (pip install ai-edge-litert)"
                ) from None
    try:
        from tflite_runtime.interpreter import Interpreter as TfliteInterpreter

        return "tflite_runtime", TfliteInterpreter
    except ImportError:
        raise RuntimeUnavailableError(
            "no TFLite runtime: install ai-edge-litert (or tflite-runtime on Python <= 3.11)"
        ) from None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null, for the runtime's native banner ("INFO: Created
    TensorFlow Lite XNNPACK delegate"): it is not ours to print, and it would land in the
    journal on every start. Both runtimes print it once per process, when the first
    interpreter allocates its tensors, so this is needed at start-up only, and must be used
    there only: the redirect is process-wide, and a thread logging meanwhile would lose its
    lines (a reload rebuilds interpreters while workers run, without it)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class ModelRunner:
    """One BlazeFace interpreter: RGB uint8 (S, S, 3) in, raw (boxes, scores) out."""

    def __init__(self, path: Path, input_size: int, num_boxes: int, *, threads: int = 2,
                 runtime: str = "auto", at_start_up: bool = False) -> None:
        """``at_start_up``: no other thread runs yet, so the runtime's native banner may be
        hidden (see :func:`quiet_native_stderr`)."""
        self.runtime_name, cls = interpreter_class(runtime)
        quiet = quiet_native_stderr() if at_start_up else contextlib.nullcontext()
        try:
            with quiet:
                self._interp = cls(model_path=str(path), num_threads=threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model {path} cannot be loaded: {exc}") from None
        self.path = path
        self.input_size = input_size
        inp = self._interp.get_input_details()[0]
        if tuple(inp["shape"]) != (1, input_size, input_size, 3):
            raise ModelError(f"model {path} expects input {tuple(inp['shape'])}, "
                             f"manifest says {input_size}x{input_size}")
        self._input_index = inp["index"]
        self._box_index = self._score_index = -1
        for out in self._interp.get_output_details():
            shape = tuple(out["shape"])
            if shape == (1, num_boxes, NUM_COORDS):
                self._box_index = out["index"]
            elif shape == (1, num_boxes, 1):
                self._score_index = out["index"]
        if self._box_index < 0 or self._score_index < 0:
            raise ModelError(f"model {path} does not have BlazeFace outputs for {num_boxes} boxes")
        self._buf = np.empty((1, input_size, input_size, 3), np.float32)
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.input_size
        if rgb.shape != (s, s, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected ({s}, {s}, 3) uint8, got {rgb.shape} {rgb.dtype}")
        with self._lock:
            # MediaPipe's ImageToTensor range [-1, 1].
            np.multiply(rgb, 1.0 / 127.5, out=self._buf[0], casting="unsafe")
            self._buf -= 1.0
            try:
                self._interp.set_tensor(self._input_index, self._buf)
                self._interp.invoke()
                boxes = self._interp.get_tensor(self._box_index)[0].copy()
                scores = self._interp.get_tensor(self._score_index)[0].copy()
            except (ValueError, RuntimeError) as exc:
                raise DetectionError(f"inference failed: {exc}") from exc
        return boxes, scores
