"""Encode redacted pixels with no metadata except the allow-listed EXIF tags.

What may be written beside the pixels is decided in :mod:`edgeguard.codec.metadata`. A failing
encoder raises :class:`~edgeguard.errors.EncodeError` (a ``RedactionError``: nothing is written).
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Mapping
from typing import Any, Final

import cv2
import numpy as np
from PIL import Image

from edgeguard.codec.formats import _LABEL, ENCODABLE, _short
from edgeguard.codec.metadata import build_exif
from edgeguard.errors import EncodeError

logger = logging.getLogger(__name__)

_SUFFIX: Final = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
# For "same": an input format we read but do not write maps to a lossless one.
_SAME_FALLBACK: Final = {"gif": "png"}


def suffix_for(fmt: str) -> str:
    """File suffix for an output format: ".jpg", ".png", ".webp", ".bmp", ".tif"."""
    try:
        return _SUFFIX[fmt]
    except KeyError:
        raise ValueError(f"no output format {fmt!r}; expected one of {ENCODABLE}") from None


def output_format(input_format: str, configured: str) -> str:
    """The format to write: ``configured`` ("same" keeps the input's; GIF becomes PNG)."""
    fmt = input_format if configured == "same" else configured
    fmt = _SAME_FALLBACK.get(fmt, fmt)
    if fmt not in ENCODABLE:
        raise ValueError(f"cannot write {fmt!r}; expected one of {ENCODABLE}")
    return fmt


def encode(
    rgb: np.ndarray, fmt: str, *, quality: int = 90, exif: Mapping[str, Any] | None = None,
    consume: bool = False,
) -> bytes:
    """Encode upright RGB pixels with no metadata except the allow-listed ``exif`` tags.

    JPEG at ``quality`` (4:2:0, OpenCV when there is no EXIF to add, else Pillow, same
    libjpeg-turbo output), PNG lossless (zlib level 1: 4x faster than the default 6 for
    about 15 % more bytes), WebP at ``quality`` (method 2), BMP, TIFF uncompressed. BMP
    cannot carry EXIF, so tags are dropped there. Raises ``ValueError`` for a bad array or
    format and :class:`EncodeError` (a ``RedactionError``) if the encoder fails.

    ``consume=True`` lets the JPEG path convert ``rgb`` to BGR in place instead of making a
    36 MB copy of a 12 MP frame; the caller must not use the array afterwards.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError("encode expects a non-empty HxWx3 uint8 array")
    if fmt not in ENCODABLE:
        raise ValueError(f"cannot write {fmt!r}; expected one of {ENCODABLE}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality {quality} is outside 1-100")
    exif_block = build_exif(exif) if exif else None
    if fmt == "bmp" and exif_block is not None:
        logger.debug("BMP cannot carry EXIF; %d allow-listed tags dropped", len(exif or {}))
        exif_block = None
    if fmt == "jpeg" and exif_block is None:
        return _encode_cv2_jpeg(rgb, quality, in_place=consume)
    return _encode_pillow(rgb, fmt, quality, exif_block)


def _encode_cv2_jpeg(rgb: np.ndarray, quality: int, *, in_place: bool = False) -> bytes:
    if in_place and rgb.flags.c_contiguous and rgb.flags.writeable:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=rgb)
    else:
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    try:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    except cv2.error as exc:
        raise EncodeError(f"JPEG encoding failed ({_short(exc)})") from exc
    if not ok:
        raise EncodeError("JPEG encoding failed")
    return bytes(buf.tobytes())


def _encode_pillow(rgb: np.ndarray, fmt: str, quality: int, exif: bytes | None) -> bytes:
    img = Image.fromarray(np.ascontiguousarray(rgb))
    params: dict[str, Any] = {}
    if fmt == "jpeg":
        params = {"quality": int(quality), "subsampling": "4:2:0"}
    elif fmt == "png":
        params = {"compress_level": 1}
    elif fmt == "webp":
        params = {"quality": int(quality), "method": 2}
    elif fmt == "tiff":
        params = {"compression": "raw"}
    if exif is not None:
        params["exif"] = exif
    out = io.BytesIO()
    try:
        img.save(out, format=_LABEL[fmt].upper(), **params)
    except (OSError, ValueError, struct.error) as exc:
        raise EncodeError(f"{_LABEL[fmt]} encoding failed ({_short(exc)})") from exc
    return out.getvalue()
