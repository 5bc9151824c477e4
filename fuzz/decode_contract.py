"""The decode contract the fuzzer checks, and its seeds (no atheris needed here).

:func:`check` is what the daemon relies on: for any bytes, decoding either raises an
:class:`~edgeguard.errors.EdgeGuardError` or returns an upright HxWx3 ``uint8`` array,
C-contiguous and writable, within ``max_pixels``; a small result encodes again, with the
allow-listed EXIF tags re-created from the input's values, and decodes to the same size.
It is shared by fuzz/fuzz_decode.py (atheris) and tests/test_fuzz_regressions.py.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from edgeguard import codec
from edgeguard.errors import EdgeGuardError

MAX_PIXELS = 4_000_000
# Tags the daemon may be configured to keep (output.keep_exif); GPS ones come from their
# own IFD, the rest from IFD0 or the Exif IFD.
KEEP = ("DateTimeOriginal", "Make", "Model", "Copyright", "GPSLatitude", "GPSLatitudeRef",
        "ExposureTime", "FNumber")
ENCODE_MAX_PIXELS = 256 * 256


def check(data: bytes) -> None:
    keep = KEEP if data[:1] in (b"\xff", b"\x89") else ()
    try:
        img = codec.decode_bytes(data, name="fuzz", max_pixels=MAX_PIXELS, keep_exif=keep)
    except EdgeGuardError:
        return
    rgb = img.rgb
    assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8, (type(rgb), rgb.dtype)
    assert rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
    assert 0 < rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS, rgb.shape
    assert rgb.flags.c_contiguous and rgb.flags.writeable
    assert img.format in codec.DECODABLE, img.format
    assert set(img.exif) <= set(keep), img.exif
    if rgb.shape[0] * rgb.shape[1] <= ENCODE_MAX_PIXELS:
        fmt = codec.output_format(img.format, "same")
        try:
            out = codec.encode(rgb, fmt, quality=80, exif=img.exif or None)
        except EdgeGuardError:
            return
        again = codec.decode_bytes(out, name="re", max_pixels=MAX_PIXELS)
        assert again.rgb.shape == rgb.shape, (again.rgb.shape, rgb.shape)


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def seeds() -> dict[str, bytes]:
    """Small valid (and a few refused) images: starting points for the mutations."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).astype(np.uint8)
    rgb[10:30, 20:40] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "FuzzCam"
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 12.34)}
    exif_bytes = exif.tobytes()
    rgba = Image.fromarray(np.dstack([rgb, rgb[..., 0]]))
    out = {
        "baseline.jpg": _save(img, "JPEG", quality=85),
        "progressive.jpg": _save(img, "JPEG", quality=85, progressive=True),
        "exif.jpg": _save(img, "JPEG", quality=85, exif=exif_bytes),
        "cmyk.jpg": _save(img.convert("CMYK"), "JPEG"),
        "grey.jpg": _save(img.convert("L"), "JPEG"),
        "rgb.png": _save(img, "PNG"),
        "exif.png": _save(img, "PNG", exif=exif_bytes),
        "rgba.png": _save(rgba, "PNG"),
        "palette.png": _save(img.quantize(16), "PNG", transparency=0),
        "grey16.png": _save(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
        "lossy.webp": _save(img, "WEBP", quality=70),
        "lossless.webp": _save(rgba, "WEBP", lossless=True, exif=exif_bytes),
        "still.gif": _save(img.quantize(32), "GIF"),
        "plain.bmp": _save(img, "BMP"),
        "lzw.tif": _save(img, "TIFF", compression="tiff_lzw"),
        "float.tif": _save(Image.fromarray(rgb[..., 0].astype(np.float32) / 7.0, "F"),
                           "TIFF"),
        "animated.gif": _save(img, "GIF", save_all=True, append_images=[img.rotate(90)]),
        "heic.bin": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
    }
    return out
