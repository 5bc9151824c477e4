"""Decode images: format checks, size limits, orientation.

Decoding turns a file into an upright RGB ``uint8`` array and nothing else:

* The format is recognised from the first bytes, never from the file name. JPEG, PNG,
  WebP, BMP, TIFF and single-frame GIF are accepted; animated or multi-page files, camera
  raw, HEIC/AVIF, SVG, PDF and anything unrecognised are refused with a one-line reason.
* The size comes from the header alone (Pillow's lazy open) and is checked against
  ``max_pixels`` before a single pixel is decoded. The plugin classes are called directly
  rather than through ``Image.open``: Pillow's own decompression-bomb limit is a process
  global that warns, or raises with a different limit, before our check can run; ours is
  the configured one and it is always an :class:`ImageTooLargeError`.
* Truncated or corrupt files are refused, never half-decoded (Pillow's
  ``LOAD_TRUNCATED_IMAGES`` must be False; the OpenCV JPEG path checks for the end-of-image
  marker itself, since older OpenCV builds pad a truncated scan with grey).
* EXIF orientation (1-8) is applied to the pixels, so the detector sees what a viewer shows
  and the output never needs an orientation tag.
* Alpha is composited onto black (:data:`ALPHA_BACKGROUND`): outputs carry no alpha, and
  pixels hidden under full transparency must not reappear in the output. Detection runs on
  exactly the pixels that are written.

The EXIF reading, orientation and allow-list live in :mod:`edgeguard.codec.metadata`.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import cv2
import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from edgeguard.codec.formats import _LABEL, _PIL_ERRORS, _short
from edgeguard.codec.metadata import _orientation, _pick_exif, _read_exif, apply_orientation
from edgeguard.errors import (
    DecodeError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)

#: Colour that transparent pixels are composited onto.
ALPHA_BACKGROUND: Final = (0, 0, 0)

_PLUGIN: Final[dict[str, type[ImageFile.ImageFile]]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "webp": WebPImagePlugin.WebPImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
    "tiff": TiffImagePlugin.TiffImageFile,
    "gif": GifImagePlugin.GifImageFile,
}

_IMREAD_RGB: Final[int | None] = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """An upright RGB image and the allow-listed EXIF tags of its source.

    ``rgb`` is HxWx3 ``uint8``, C-contiguous and writable (the field is frozen, not the
    pixels), orientation applied, alpha composited onto :data:`ALPHA_BACKGROUND`.
    ``format`` is the source format (one of :data:`DECODABLE`). ``exif`` maps tag names
    (Pillow's ``ExifTags`` names) to values, only for the names asked for in ``keep_exif``;
    it is empty by default.
    """

    rgb: np.ndarray
    format: str
    exif: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

# ----------------------------------------------------------------------------- sniffing

_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis",
                                 b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})


def _sniff(head: bytes) -> str:
    """The format named by the first bytes, or raise with a short reason."""
    if not head:
        raise DecodeError("empty file")
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        if head[8:10] == b"CR":
            raise UnsupportedFormatError("camera raw (Canon CR2) is not supported")
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise _unsupported(head)


def _unsupported(head: bytes) -> InputError:
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS or (brand == b"mif1" and b"avif" in head[16:64]):
            return UnsupportedFormatError("AVIF is not supported")
        if brand in _HEIF_BRANDS:
            return UnsupportedFormatError("HEIC is not supported")
        if brand == b"crx ":
            return UnsupportedFormatError("camera raw (Canon CR3) is not supported")
        return UnsupportedFormatError("video or ISO media files are not supported")
    if head.startswith(b"%PDF"):
        return UnsupportedFormatError("PDF is not supported")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in head.lower()):
        return UnsupportedFormatError("SVG is not supported")
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return UnsupportedFormatError("JPEG 2000 is not supported")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return UnsupportedFormatError("JPEG XL is not supported")
    if head.startswith(b"8BPS"):
        return UnsupportedFormatError("Photoshop PSD is not supported")
    return DecodeError("not an image (unrecognised format)")


_SNIFF_BYTES: Final = 64


@contextlib.contextmanager
def _bomb_guard(fmt: str) -> Iterator[None]:
    """Turn Pillow's DecompressionBombWarning into an exception, for GIF only.

    GIF frames larger than the canvas grow it inside Pillow (at open, seek and load), where
    Pillow runs its own bomb check; no other plugin we call does. ``catch_warnings`` swaps a
    process-global filter list: if two threads race here, the worst case is that the
    "error" filter for this one warning class stays installed, which is the policy anyway.
    """
    if fmt != "gif":
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _open_header(fh: IO[bytes], fmt: str) -> ImageFile.ImageFile:
    """Pillow's lazy open for one known format: header parsed, no pixels decoded."""
    fh.seek(0)
    try:
        with _bomb_guard(fmt):
            # No file name: Pillow would memory-map a file of that name for raw tiles.
            return _PLUGIN[fmt](fh, "")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{_LABEL[fmt]} canvas is too large") from exc
    except _PIL_ERRORS as exc:
        if fmt == "tiff" and str(exc) == "unknown pixel mode":
            # A well-formed TIFF whose samples Pillow has no mode for (64- or 16-bit float,
            # float RGB, ...): not corrupt, and saying so would send the user the wrong way.
            raise UnsupportedFormatError("TIFF sample format is not supported (bits per "
                                         "sample or sample type; a float TIFF must be one "
                                         "32-bit channel)") from exc
        raise DecodeError(f"truncated or corrupt {_LABEL[fmt]} ({_short(exc)})") from exc

def _megapixels(n: int) -> str:
    mp = n / 1e6
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.3g}"


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError(f"image header has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} ({_megapixels(width * height)} MP), "
            f"above the {_megapixels(max_pixels)} MP limit"
        )


def _check_single_image(img: ImageFile.ImageFile, fmt: str) -> None:
    if fmt == "tiff":
        tags = img.tag_v2  # type: ignore[attr-defined]
        if 0xC612 in tags:
            raise UnsupportedFormatError("camera raw (DNG) is not supported")
        subfile = tags.get(0x00FE, 0)  # NewSubfileType bit 0: a reduced-resolution copy
        if 0x014A in tags or (isinstance(subfile, int) and subfile & 1):
            raise UnsupportedFormatError("TIFF with sub-images (camera raw?) is not supported")
    try:
        with _bomb_guard(fmt):
            frames = int(getattr(img, "n_frames", 1))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{_LABEL[fmt]} frame is too large") from exc
    except _PIL_ERRORS as exc:
        raise DecodeError(f"truncated or corrupt {_LABEL[fmt]} ({_short(exc)})") from exc
    if frames > 1:
        kind = {"tiff": "multi-page TIFF"}.get(fmt, f"animated {_LABEL[fmt]}")
        raise UnsupportedFormatError(f"{kind} is not supported")


def probe(source: Path | str | bytes) -> tuple[str, int, int]:
    """Format, width and height from the header alone; no pixels are decoded.

    Raises :class:`DecodeError` or :class:`UnsupportedFormatError` like the decoders, and
    :class:`InputError` when the file cannot be read.
    """
    if isinstance(source, bytes):
        return _probe(io.BytesIO(source))
    with _open_input(Path(source)) as fh:
        return _probe(fh)


def _probe(fh: IO[bytes]) -> tuple[str, int, int]:
    fmt = _sniff(_read_head(fh))
    img = _open_header(fh, fmt)
    return fmt, int(img.size[0]), int(img.size[1])


def _open_input(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InputError("file not found") from None
    except IsADirectoryError:
        raise InputError("is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None

# ----------------------------------------------------------------------------- decoding


def decode_file(
    path: Path, *, max_pixels: int, keep_exif: tuple[str, ...] = ()
) -> DecodedImage:
    """Decode ``path`` to upright RGB; see the module docstring for the policy.

    Raises :class:`ImageTooLargeError` (header over ``max_pixels``), :class:`DecodeError`
    (not an image, truncated, corrupt), :class:`UnsupportedFormatError` (a format or variant
    we refuse) or :class:`InputError` (cannot read the file). Messages are one short line
    and never contain the file name (the caller decides whether names are logged).
    """
    with _open_input(Path(path)) as fh:
        return _decode(fh, max_pixels=max_pixels, keep_exif=keep_exif)


def decode_bytes(
    data: bytes, *, name: str, max_pixels: int, keep_exif: tuple[str, ...] = ()
) -> DecodedImage:
    """Like :func:`decode_file` for an in-memory file.

    ``name`` is the caller's label for the data (camera frame id, upload name). The codec
    neither logs it (file names may be hidden from logs) nor gives it to Pillow, which
    would memory-map a file of that name from the working folder for some formats.
    """
    del name
    return _decode(io.BytesIO(data), max_pixels=max_pixels, keep_exif=keep_exif)


def _read_head(fh: IO[bytes]) -> bytes:
    try:
        return fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None


def _decode(fh: IO[bytes], *, max_pixels: int, keep_exif: tuple[str, ...]) -> DecodedImage:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to padding truncated files: refuse rather than half-decode.
        raise DecodeError("refusing to decode: Pillow is set to load truncated images")
    fmt = _sniff(_read_head(fh))
    img = _open_header(fh, fmt)
    _check_size(int(img.size[0]), int(img.size[1]), max_pixels)
    _check_single_image(img, fmt)

    if fmt == "jpeg" and img.mode in ("RGB", "L"):
        try:
            fh.seek(0)
            data = fh.read()
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}") from None
        pixels = _decode_jpeg_cv2(data, img.size)
    else:
        pixels = _decode_pillow(img, fmt)

    exif = _read_exif(img)
    rgb = apply_orientation(pixels, _orientation(exif))
    kept = _pick_exif(exif, keep_exif) if keep_exif and exif is not None else {}
    # Writable and contiguous: Pillow's array views are read-only, the redactor writes.
    rgb = np.require(rgb, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
    return DecodedImage(rgb=rgb, format=fmt, exif=kept)


def _scan_start(data: bytes) -> int:
    """Offset just past the first SOS header, walking JPEG marker segments from SOI."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them too
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise DecodeError("corrupt JPEG (bad segment length)")
        pos += 2 + length
        if marker == 0xDA:
            return pos
    raise DecodeError("truncated or corrupt JPEG (no image data)")


def _decode_jpeg_cv2(data: bytes, size: tuple[int, int]) -> np.ndarray:
    # In entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so an
    # EOI after the first scan means the data ran to its end. OpenCV < 5 would otherwise
    # return a truncated JPEG padded with grey, with only a warning on stderr.
    if data.rfind(b"\xff\xd9") < _scan_start(data):
        raise DecodeError("truncated or corrupt JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, np.uint8)
    flags = cv2.IMREAD_IGNORE_ORIENTATION
    try:
        if _IMREAD_RGB is not None:
            out = cv2.imdecode(buf, _IMREAD_RGB | flags)
        else:  # pragma: no cover - OpenCV < 4.10
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | flags)
            out = None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as exc:
        raise DecodeError(f"truncated or corrupt JPEG ({_short(exc)})") from exc
    w, h = size
    if out is None or out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise DecodeError("truncated or corrupt JPEG")
    return out


def _decode_pillow(img: ImageFile.ImageFile, fmt: str) -> np.ndarray:
    label = _LABEL[fmt]
    try:
        with _bomb_guard(fmt):
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{label} frame is too large") from exc
    except _PIL_ERRORS as exc:
        raise DecodeError(f"truncated or corrupt {label} ({_short(exc)})") from exc
    try:
        return to_rgb8(img)
    except ValueError as exc:
        raise UnsupportedFormatError(f"{label} colour mode {img.mode} is not supported") from exc


def to_rgb8(img: Image.Image) -> np.ndarray:
    """A loaded Pillow image as HxWx3 ``uint8`` RGB.

    Grey and bilevel are replicated; palette, LA, RGBA (and transparency in ``info``) are
    composited onto :data:`ALPHA_BACKGROUND`; CMYK uses Pillow's conversion (Adobe's
    inverted CMYK is undone by the JPEG plugin); 16-bit grey is shifted down so its
    highest used bit becomes bit 7 (a plain ``>> 8`` for full-range data; 12-bit data is
    not left near-black, which would hide faces from the detector but not from someone
    stretching the levels of the output); 32-bit integer and float grey are stretched from
    their actual minimum and maximum. Raises ``ValueError`` for other modes.
    """
    mode = img.mode
    has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
    if has_alpha and mode in ("RGBA", "RGBa", "LA", "La", "PA", "P", "L", "RGB"):
        rgba = np.asarray(img if mode == "RGBA" else img.convert("RGBA"), dtype=np.uint8)
        return _composite(rgba)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L") if mode == "1" else img, dtype=np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return cv2.cvtColor(_grey_to_8bit(np.asarray(img)), cv2.COLOR_GRAY2RGB)
    if mode in ("P", "CMYK", "YCbCr", "RGBX"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise ValueError(f"unsupported mode {mode}")


def _grey_to_8bit(a: np.ndarray) -> np.ndarray:
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    if a.dtype.kind in "ui":
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0:
            shift = max(0, hi.bit_length() - 8)
            return (a >> shift).astype(np.uint8)
        return _stretch(a.astype(np.float64), np.ones(a.shape, bool))
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    out = _stretch(np.where(finite, a, 0.0), finite)
    # Float TIFFs (thermal, depth, scientific) mark missing data with NaN and saturation
    # with +-inf: NaN and -inf are black, +inf white; the finite values alone set the
    # stretch, so one inf pixel does not flatten the picture (nor warn in a cast).
    out[np.isposinf(a)] = 255
    return out


def _stretch(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Values in ``a`` where ``valid`` (finite, float64) to 0-255: [0, 1] data is scaled by
    255, anything else stretched from its minimum to its maximum; invalid pixels are 0."""
    out = np.zeros(a.shape, np.uint8)
    if not valid.any():
        return out
    v = a[valid]
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = v * 255.0
    elif hi > lo:
        # (v - lo) / (hi - lo) is within [0, 1]: no overflow, even for a tiny range.
        scaled = (v - lo) / (hi - lo) * 255.0
    else:
        scaled = np.zeros_like(v)
    out[valid] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def _composite(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    bg = np.asarray(ALPHA_BACKGROUND, np.uint16)
    out = (rgb * alpha + bg * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)
