"""Encoded test images built from the shared fixtures (no files from outside the repo)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg(rgb: np.ndarray, *, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    img = Image.fromarray(rgb)
    if size is not None:
        img = img.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))
