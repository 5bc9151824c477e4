"""The one adapter to OpenCV's DNN module, which runs CenterFace (ONNX).

OpenCV is already a dependency (decode, resize), so the second model needs no new runtime,
on x86-64 and aarch64 alike. One network per model, created once by
:class:`CenterFaceRunner`; a ``cv2.dnn.Net`` is not thread-safe, so inference on it is
serialised by a lock, like the TFLite interpreters. It runs on OpenCV's own thread pool
(every core by default); that pool is process-wide (``cv2.setNumThreads``), so it is left
as it is rather than changed behind the other OpenCV calls' back.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from edgeguard.detect import centerface as cf
from edgeguard.errors import DetectionError, ModelError

# The model's output names (the reference's ``onnx_output_names``): heatmap, scale,
# offset, landmarks.
OUTPUTS = ("537", "538", "539", "540")


class CenterFaceRunner:
    """One CenterFace network: an RGB uint8 frame in, raw output maps out."""

    def __init__(self, path: Path) -> None:
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ModelError(f"model {path} cannot be loaded: {exc.msg.strip()}") from None
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw (heatmap, scale, offset, landmarks) for ``rgb`` whose sides are multiples of 32.

        The input is RGB values 0-255, unnormalised, as the reference feeds it.
        """
        h, w = rgb.shape[:2]
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or h % cf.ALIGN \
                or w % cf.ALIGN or h == 0 or w == 0:
            raise ValueError(f"expected (H, W, 3) uint8 with sides multiple of {cf.ALIGN}, "
                             f"got {rgb.shape} {rgb.dtype}")
        blob = cv2.dnn.blobFromImage(rgb, 1.0, (w, h), (0, 0, 0), swapRB=False, crop=False)
        with self._lock:
            try:
                self._net.setInput(blob)
                heat, scale, offset, lms = self._net.forward(list(OUTPUTS))
            except cv2.error as exc:
                raise DetectionError(f"inference failed: {exc.msg.strip()}") from exc
        return heat, scale, offset, lms

    def detect(self, rgb: np.ndarray, *, scale: float,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Faces in the whole of ``rgb`` shown to the network at ``scale``: boxes (N, 14) in
        source pixels and scores, after the reference's NMS."""
        h, w = rgb.shape[:2]
        iw, ih = cf.input_shape(w, h, scale)
        interp = cv2.INTER_AREA if iw < w else cv2.INTER_LINEAR
        view = rgb if (iw, ih) == (w, h) else cv2.resize(rgb, (iw, ih), interpolation=interp)
        return cf.detections(self(view), threshold=threshold, scale_x=iw / w, scale_y=ih / h)
