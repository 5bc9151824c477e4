"""The one adapter to OpenCV's DNN module, which runs CenterFace (ONNX).

OpenCV is already a dependency (decode, resize), so the second model needs no new runtime,
on x86-64 and aarch64 alike. One network per model, created once by
:class:`CenterFaceRunner`; a ``cv2.dnn.Net`` is not thread-safe, so inference on it is
serialised by a lock, like the TFLite interpreters. It runs on OpenCV's own thread pool
(every core by default); that pool is process-wide (``cv2.setNumThreads``), so it is left
as it is rather than changed behind the other OpenCV calls' back.
"""

from __future__ import annotations

import math
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

    def detect(self, rgb: np.ndarray, *, scale: float, threshold: float,
               max_pixels: float = float("inf"),
               overlap: int = 96) -> tuple[np.ndarray, np.ndarray]:
        """Faces in the whole of ``rgb`` shown to the network at ``scale``: boxes (N, 14) in
        source pixels and scores, after the reference's NMS per input.

        The network's memory grows with its input (about 240 bytes a pixel), so a frame
        larger than ``max_pixels`` at ``scale`` is searched in overlapping tiles of at most
        that size (a face up to ``overlap`` network pixels lies whole in one tile), plus one
        pass over the whole frame shrunk to ``max_pixels`` for the faces larger than that.
        """
        h, w = rgb.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        tw, th, corners = cf.tile_grid(sw, sh, max_pixels, overlap)
        if len(corners) == 1:
            iw, ih = cf.input_shape(w, h, scale)
            view = _resized(rgb, iw, ih)
            return cf.detections(self(view), threshold=threshold, scale_x=iw / w,
                                 scale_y=ih / h)
        coarse = math.sqrt(max_pixels / (w * h))
        big, big_scores = self.detect(rgb, scale=coarse, threshold=threshold)
        # The whole-frame pass is for the faces too large for a tile; the smaller ones
        # it finds at its coarse scale the tiles see better (and it adds strays).
        keep = (big[:, 3] - big[:, 1]) * scale >= 0.75 * overlap
        parts = [(big[keep], big_scores[keep])]
        frame = _resized(rgb, sw, sh)
        tile = np.zeros((th, tw, 3), np.uint8)
        for x, y in corners:
            crop = frame[y:y + th, x:x + tw]
            tile[:] = 0
            tile[:crop.shape[0], :crop.shape[1]] = crop
            boxes, scores = cf.detections(self(tile), threshold=threshold, scale_x=1.0,
                                          scale_y=1.0)
            # A face cut by an inner tile edge lies whole in the neighbouring tile when it
            # fits the overlap: its partial box here would only add area.
            cut = ((boxes[:, 0] < 1) & (x > 0)) | ((boxes[:, 1] < 1) & (y > 0)) \
                | ((boxes[:, 2] > tw - 1) & (x + tw < sw)) \
                | ((boxes[:, 3] > th - 1) & (y + th < sh))
            small = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) <= overlap
            boxes, scores = boxes[~(cut & small)], scores[~(cut & small)]
            boxes[:, 0::2] += x
            boxes[:, 1::2] += y
            boxes[:, 0::2] *= w / sw
            boxes[:, 1::2] *= h / sh
            parts.append((boxes, scores))
        boxes = np.concatenate([b for b, _ in parts])
        scores = np.concatenate([s for _, s in parts])
        keep = cf.nms(boxes, scores)  # a face in an overlap is found by both tiles
        return boxes[keep], scores[keep]


def _resized(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (width, height) == (w, h):
        return rgb
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interp)
