"""Test images with a real face, and what a redacted copy must look like."""

from __future__ import annotations

import io

import numpy as np

# The astronaut's face in scikit-image's 512x512 portrait (rows, columns): forehead to
# chin, ear to ear, well inside any detection box, so it must change.
FACE = (slice(75, 160), slice(190, 260))
CAMERA_MARK = "EdgeGuardTestCam-7f3a"


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    """The image as a camera would write it: JPEG with EXIF (maker, model, GPS)."""
    from PIL import Image

    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x010F] = CAMERA_MARK  # Make
        exif[0x0110] = "Model-XYZ"  # Model
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = "N", (52.0, 31.0, 12.0)  # GPSLatitudeRef, GPSLatitude
        img.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def assert_redacted(original: np.ndarray, data: bytes) -> None:
    """The face changed a lot, most of the rest did not, and no metadata survived."""
    from PIL import Image

    out = decode(data)
    assert out.shape == original.shape
    diff = np.abs(out - original.astype(np.int16)).mean(axis=2)
    face_diff = float(diff[FACE].mean())
    assert face_diff > 12.0, f"face region barely changed (mean |diff| {face_diff:.1f})"
    # The rest is the same picture: most pixels differ by JPEG noise only. (Not a fixed
    # background patch: privacy-first search profiles may redact a false positive there.)
    unchanged = float((diff < 10).mean())
    assert unchanged > 0.6, f"only {unchanged:.0%} of the picture is unchanged"
    with Image.open(io.BytesIO(data)) as img:
        assert not img.getexif(), dict(img.getexif())
        assert "exif" not in img.info
    assert CAMERA_MARK.encode() not in data
    assert b"Exif\x00\x00" not in data
