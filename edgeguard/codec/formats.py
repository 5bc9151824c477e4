"""Format names and what the decoder and encoder share: labels, Pillow's errors, short reasons."""

from __future__ import annotations

import struct
from typing import Final

#: Formats :func:`decode_file` accepts ("gif": single frame only).
DECODABLE: Final = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
#: Formats :func:`encode` writes.
ENCODABLE: Final = ("jpeg", "png", "webp", "bmp", "tiff")

_LABEL: Final = {
    "jpeg": "JPEG", "png": "PNG", "webp": "WebP", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF",
}

# What Pillow raises for malformed headers and data (Image.open catches the same set).
_PIL_ERRORS: Final = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                      struct.error)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
