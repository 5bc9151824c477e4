"""Codec tests on real files built from the astronaut portrait: no mocks.

Each file is written by Pillow, OpenCV or piexif the way a camera, phone or editor would,
then decoded and re-encoded by EdgeGuard; assertions are on pixels and on raw output bytes.
"""

from __future__ import annotations

import io
import resource
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import piexif
import pytest
from helpers.daemon import PATIENCE
from PIL import Image, ImageCms, ImageFile

from edgeguard import codec
from edgeguard.errors import (
    DecodeError,
    EncodeError,
    ImageTooLargeError,
    InputError,
    RedactionError,
    UnsupportedFormatError,
)

LIMIT = 64_000_000


def _save(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _decode(data: bytes, **kw: Any) -> codec.DecodedImage:
    kw.setdefault("max_pixels", LIMIT)
    return codec.decode_bytes(data, name="test", **kw)


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


@pytest.fixture(scope="module")
def upright(astronaut_rgb: np.ndarray) -> np.ndarray:
    """A non-square, visibly asymmetric crop (face upper left, arm lower right)."""
    return np.ascontiguousarray(astronaut_rgb[20:260:2, 100:420:2])  # 120x160


# ----------------------------------------------------------------------------- orientation


def _stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for ``upright`` shown with ``orientation``.

    Straight from the EXIF 2.32 definitions of where stored row 0 and column 0 belong,
    written as index arithmetic so it shares nothing with the code under test.
    """
    h, w = upright.shape[:2]
    hs, ws = (h, w) if orientation <= 4 else (w, h)
    r, c = np.meshgrid(np.arange(hs), np.arange(ws), indexing="ij")
    src = {
        1: (r, c),
        2: (r, w - 1 - c),  # row 0 top, column 0 right
        3: (h - 1 - r, w - 1 - c),  # row 0 bottom, column 0 right
        4: (h - 1 - r, c),  # row 0 bottom, column 0 left
        5: (c, r),  # row 0 left, column 0 top
        6: (c, w - 1 - r),  # row 0 right, column 0 top
        7: (h - 1 - c, w - 1 - r),  # row 0 right, column 0 bottom
        8: (h - 1 - c, r),  # row 0 left, column 0 bottom
    }[orientation]
    return np.ascontiguousarray(upright[src[0], src[1]])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_orientation_lossless(upright: np.ndarray, fmt: str, orientation: int) -> None:
    stored = _stored_for(upright, orientation)
    params: dict[str, Any] = {"exif": _exif_orientation(orientation)}
    if fmt == "WEBP":
        params["lossless"] = True
    data = _save(Image.fromarray(stored), fmt, **params)
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == orientation
    out = _decode(data)
    assert out.rgb.shape == upright.shape
    np.testing.assert_array_equal(out.rgb, upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_jpeg(upright: np.ndarray, orientation: int) -> None:
    stored = _stored_for(upright, orientation)
    data = _save(Image.fromarray(stored), "JPEG", quality=95,
                 exif=_exif_orientation(orientation))
    out = _decode(data)
    assert out.rgb.shape == upright.shape
    err = np.abs(out.rgb.astype(int) - upright).mean()
    assert err < 4.0
    if orientation != 1:  # ignoring the tag would have been clearly wrong
        assert stored.shape != upright.shape or np.abs(stored.astype(int) - upright).mean() > 20


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_invalid_orientation_is_ignored(upright: np.ndarray, value: int) -> None:
    data = _save(Image.fromarray(upright), "PNG", exif=_exif_orientation(value))
    np.testing.assert_array_equal(_decode(data).rgb, upright)


# ----------------------------------------------------------------------------- metadata

SERIAL = b"SN-0042-SECRET"
COMMENT = b"SECRET-COMMENT-shot at home"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
       b'02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
       b"<dc:creator>XMP-SECRET-AUTHOR</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>")
MAKE = b"LeakyCam"


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


@pytest.fixture(scope="module")
def leaky_jpeg(astronaut_rgb: np.ndarray) -> bytes:
    """A JPEG carrying everything a phone or editor leaves behind."""
    thumb = _save(Image.fromarray(astronaut_rgb[::8, ::8]), "JPEG", quality=80)
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: MAKE, piexif.ImageIFD.Model: b"Model-X",
                piexif.ImageIFD.Orientation: 1},
        "Exif": {piexif.ExifIFD.BodySerialNumber: SERIAL,
                 piexif.ExifIFD.DateTimeOriginal: b"2024:05:06 07:08:09",
                 piexif.ExifIFD.MakerNote: b"MAKERNOTE-SECRET"},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (1234, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"W",
                piexif.GPSIFD.GPSLongitude: ((0, 1), (7, 1), (3900, 100))},
        "1st": {piexif.ImageIFD.JPEGInterchangeFormat: 0,
                piexif.ImageIFD.JPEGInterchangeFormatLength: 0},
        "thumbnail": thumb,
    })
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    body = _save(Image.fromarray(astronaut_rgb), "JPEG", quality=92)
    iptc = (b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x12"
            b"\x1c\x02\x50\x00\x0eIPTC-BYLINE-XY")
    segments = (
        _segment(0xFFE1, exif)
        + _segment(0xFFE1, b"http://ns.adobe.com/xap/1.0/\x00" + XMP)
        + _segment(0xFFE2, b"ICC_PROFILE\x00\x01\x01" + icc)
        + _segment(0xFFED, iptc)
        + _segment(0xFFFE, COMMENT)
    )
    data = body[:2] + segments + body[2:]
    # The source really carries all of it, or the stripping test proves nothing.
    info = Image.open(io.BytesIO(data)).info
    assert {"exif", "icc_profile", "xmp", "comment", "photoshop"} <= set(info)
    assert data.count(b"\xff\xd8\xff") == 2  # the main image and the thumbnail
    for secret in (SERIAL, COMMENT, b"XMP-SECRET-AUTHOR", b"IPTC-BYLINE", b"MAKERNOTE"):
        assert secret in data
    return data


_SECRETS = (b"Exif", b"http://ns.adobe.com/xap", b"XMP-SECRET", b"ICC_PROFILE", b"Photoshop",
            b"8BIM", SERIAL, COMMENT, MAKE, b"MAKERNOTE", b"2024:05:06", b"Model-X")


def _png_chunks(data: bytes) -> list[bytes]:
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks.append(kind)
        pos += 12 + length
    return chunks


def _riff_chunks(data: bytes) -> list[bytes]:
    pos, chunks = 12, []
    while pos < len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        chunks.append(kind)
        pos += 8 + length + (length & 1)
    return chunks


@pytest.mark.parametrize("fmt", codec.ENCODABLE)
def test_reencoding_strips_all_metadata(leaky_jpeg: bytes, fmt: str) -> None:
    decoded = _decode(leaky_jpeg)
    assert decoded.exif == {}
    out = codec.encode(decoded.rgb, fmt, quality=90)
    for secret in _SECRETS:
        assert secret not in out, secret
    img = Image.open(io.BytesIO(out))
    assert (img.format or "").lower() == fmt
    for key in ("exif", "icc_profile", "xmp", "comment", "photoshop", "XML:com.adobe.xmp"):
        assert key not in img.info
    if fmt == "jpeg":
        assert out.count(b"\xff\xd8") == 1  # no embedded thumbnail
        markers = _jpeg_markers(out)
        assert not {m for m in markers if 0xE1 <= m <= 0xEF or m == 0xFE}, markers
        assert len(img.getexif()) == 0
    elif fmt == "png":
        assert set(_png_chunks(out)) == {b"IHDR", b"IDAT", b"IEND"}
    elif fmt == "webp":
        assert set(_riff_chunks(out)) <= {b"VP8 ", b"VP8L"}
    elif fmt == "tiff":
        tags = set(img.tag_v2)  # type: ignore[attr-defined]
        assert not tags & {0x8769, 0x8825, 0x02BC, 0x83BB, 0x8773, 0x010F, 0x0110, 0x0112}


def _jpeg_markers(data: bytes) -> list[int]:
    pos, markers = 2, []
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return markers


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "tiff"])
def test_keep_exif_allow_list_keeps_only_named_tags(leaky_jpeg: bytes, fmt: str) -> None:
    keep = ("Make", "DateTimeOriginal", "GPSLatitudeRef", "Orientation", "NoSuchTag")
    decoded = _decode(leaky_jpeg, keep_exif=keep)
    assert decoded.exif == {"Make": "LeakyCam", "DateTimeOriginal": "2024:05:06 07:08:09",
                            "GPSLatitudeRef": "N"}
    out = codec.encode(decoded.rgb, fmt, exif=decoded.exif)
    for secret in (SERIAL, COMMENT, b"XMP-SECRET", b"ICC_PROFILE", b"MAKERNOTE", b"Model-X"):
        assert secret not in out
    exif = Image.open(io.BytesIO(out)).getexif()
    assert exif.get(0x010F) == "LeakyCam"
    assert 0x0112 not in exif  # orientation is in the pixels, never in the tags
    assert exif.get_ifd(0x8769) == {0x9003: "2024:05:06 07:08:09"}
    assert exif.get_ifd(0x8825) == {1: "N"}
    if fmt == "jpeg":
        assert out.count(b"\xff\xd8") == 1


def test_bmp_cannot_carry_exif(astronaut_rgb: np.ndarray) -> None:
    out = codec.encode(astronaut_rgb, "bmp", exif={"Make": "LeakyCam"})
    assert b"LeakyCam" not in out


def test_unknown_exif_names() -> None:
    names = ("Make", "GPSLatitude", "Orientation", "MakerNote", "Nope", "DateTimeOriginal")
    assert codec.unknown_exif_names(names) == ("Orientation", "MakerNote", "Nope")


# ----------------------------------------------------------------------------- colour modes


def test_grey_png(astronaut_rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    out = _decode(_save(Image.fromarray(grey), "PNG"))
    assert out.rgb.shape == (*grey.shape, 3)
    for ch in range(3):
        np.testing.assert_array_equal(out.rgb[..., ch], grey)


def test_grey_jpeg(astronaut_rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    out = _decode(_save(Image.fromarray(grey), "JPEG", quality=95))
    assert out.rgb.shape == (*grey.shape, 3)
    assert np.abs(out.rgb[..., 1].astype(int) - grey).mean() < 2


def test_16bit_grey_png_full_range(astronaut_rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16)
    g16 = grey * 257  # 0..65535
    data = _save(Image.fromarray(g16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = _decode(data)
    np.testing.assert_array_equal(out.rgb[..., 0], (g16 >> 8).astype(np.uint8))


def test_12bit_grey_in_16bit_png_is_not_left_dark(astronaut_rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16)
    g12 = (grey << 4) | (grey >> 4)  # a 12-bit sensor's 0..4095
    out = _decode(_save(Image.fromarray(g12), "PNG"))
    np.testing.assert_array_equal(out.rgb[..., 0], (g12 >> 4).astype(np.uint8))


def test_16bit_rgb_png(astronaut_rgb: np.ndarray) -> None:
    rgb16 = astronaut_rgb.astype(np.uint16) * 257 + 3
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb16[..., ::-1]))
    assert ok
    out = _decode(buf.tobytes())
    np.testing.assert_array_equal(out.rgb, (rgb16 >> 8).astype(np.uint8))


def test_float_tiff_is_stretched() -> None:
    ramp = np.linspace(-3.0, 5.0, 64 * 32, dtype=np.float32).reshape(32, 64)
    out = _decode(_save(Image.fromarray(ramp, mode="F"), "TIFF"))
    assert out.rgb[0, 0, 0] == 0 and out.rgb[-1, -1, 0] == 255


def test_cmyk_jpeg_adobe_inverted(astronaut_rgb: np.ndarray) -> None:
    data = _save(Image.fromarray(astronaut_rgb).convert("CMYK"), "JPEG", quality=95)
    assert b"Adobe" in data[:200]  # Pillow writes Adobe's inverted CMYK
    out = _decode(data)
    assert np.abs(out.rgb.astype(int) - astronaut_rgb).mean() < 4


def test_rgba_png_composited_on_black(astronaut_rgb: np.ndarray) -> None:
    h, w = astronaut_rgb.shape[:2]
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, : w // 3] = 0  # hidden: must not come back
    alpha[:, w // 3 : 2 * w // 3] = 128
    rgba = np.dstack([astronaut_rgb, alpha])
    out = _decode(_save(Image.fromarray(rgba), "PNG")).rgb
    assert out.shape == (h, w, 3)
    assert not out[:, : w // 3].any()
    half = out[:, w // 3 : 2 * w // 3].astype(int)
    expect = astronaut_rgb[:, w // 3 : 2 * w // 3].astype(int) * 128 / 255
    assert np.abs(half - expect).max() <= 1
    np.testing.assert_array_equal(out[:, 2 * w // 3 :], astronaut_rgb[:, 2 * w // 3 :])


def test_palette_png_with_transparency(astronaut_rgb: np.ndarray) -> None:
    pal = Image.fromarray(astronaut_rgb).quantize(64)
    index = np.asarray(pal)
    hidden = int(index[0, 0])
    data = _save(pal, "PNG", transparency=hidden)
    assert Image.open(io.BytesIO(data)).mode == "P"
    out = _decode(data).rgb
    assert not out[index == hidden].any()
    visible = np.asarray(pal.convert("RGB"))[index != hidden]
    np.testing.assert_array_equal(out[index != hidden], visible)


def test_la_png(astronaut_rgb: np.ndarray) -> None:
    grey = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2GRAY)
    alpha = np.zeros_like(grey)
    alpha[100:] = 255
    out = _decode(_save(Image.fromarray(np.dstack([grey, alpha]), mode="LA"), "PNG")).rgb
    assert not out[:100].any()
    np.testing.assert_array_equal(out[100:, :, 2], grey[100:])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_format_decodes_writable_contiguous(astronaut_rgb: np.ndarray, fmt: str) -> None:
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = _decode(_save(Image.fromarray(astronaut_rgb), fmt, **params))
    assert out.format == fmt.lower()
    assert (out.width, out.height) == (512, 512)
    assert out.rgb.dtype == np.uint8 and out.rgb.flags.c_contiguous and out.rgb.flags.writeable
    if fmt in ("PNG", "WEBP", "BMP", "TIFF"):
        np.testing.assert_array_equal(out.rgb, astronaut_rgb)
    else:
        assert np.abs(out.rgb.astype(int) - astronaut_rgb).mean() < 8


def test_decode_file_and_probe(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    path = tmp_path / "photo.png"  # the name lies: the content is a JPEG
    data = _save(Image.fromarray(astronaut_rgb), "JPEG")
    path.write_bytes(data)
    assert codec.probe(path) == ("jpeg", 512, 512)
    assert codec.probe(data) == ("jpeg", 512, 512)
    # probe reads the header only: it does not notice a missing scan.
    assert codec.probe(data[:1000]) == ("jpeg", 512, 512)
    assert codec.decode_file(path, max_pixels=LIMIT).format == "jpeg"
    with pytest.raises(InputError, match="file not found"):
        codec.decode_file(tmp_path / "missing.jpg", max_pixels=LIMIT)
    with pytest.raises(InputError, match="folder"):
        codec.decode_file(tmp_path, max_pixels=LIMIT)


def test_mpo_decodes_first_image(astronaut_rgb: np.ndarray) -> None:
    data = _save(Image.fromarray(astronaut_rgb), "MPO", save_all=True,
                 append_images=[Image.fromarray(astronaut_rgb[::-1])])
    out = _decode(data)
    assert np.abs(out.rgb.astype(int) - astronaut_rgb).mean() < 8


def test_jpeg_with_trailing_data_is_accepted(astronaut_rgb: np.ndarray) -> None:
    # Motion photos append a video after the JPEG's end-of-image marker.
    data = _save(Image.fromarray(astronaut_rgb), "JPEG") + b"\x00\x00\x00\x18ftypmp42" + bytes(500)
    assert _decode(data).rgb.shape == (512, 512, 3)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("frac", [0.02, 0.3, 0.7, 0.995])
def test_truncated_files_are_refused(astronaut_rgb: np.ndarray, fmt: str, frac: float) -> None:
    data = _save(Image.fromarray(astronaut_rgb), fmt)
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        _decode(data[: int(len(data) * frac)])


def test_truncated_progressive_jpeg_and_padding(astronaut_rgb: np.ndarray) -> None:
    data = _save(Image.fromarray(astronaut_rgb), "JPEG", progressive=True)
    for cut in (len(data) // 3, len(data) - 3):
        with pytest.raises(DecodeError, match="truncated or corrupt JPEG"):
            _decode(data[:cut])
        with pytest.raises(DecodeError, match="truncated or corrupt JPEG"):
            _decode(data[:cut] + bytes(2000))  # zero-padded, as a failed copy leaves it


def test_truncated_jpeg_is_refused_even_with_a_thumbnail(leaky_jpeg: bytes) -> None:
    # The thumbnail's end-of-image marker must not pass for the main image's.
    with pytest.raises(DecodeError, match="truncated or corrupt JPEG"):
        _decode(leaky_jpeg[: len(leaky_jpeg) * 2 // 3])


def test_corrupt_png_crc_is_refused(astronaut_rgb: np.ndarray) -> None:
    data = bytearray(_save(Image.fromarray(astronaut_rgb), "PNG"))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(DecodeError):
        _decode(bytes(data))


def test_pillow_truncated_mode_is_refused(monkeypatch: pytest.MonkeyPatch,
                                          astronaut_rgb: np.ndarray) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DecodeError, match="truncated"):
        _decode(_save(Image.fromarray(astronaut_rgb), "PNG"))


def test_empty_and_random_bytes(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match=r"^empty file$"):
        _decode(b"")
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(DecodeError, match=r"^empty file$"):
        codec.decode_file(empty, max_pixels=LIMIT)
    noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(DecodeError, match=r"^not an image \(unrecognised format\)$"):
        _decode(noise)
    with pytest.raises(DecodeError, match="truncated or corrupt JPEG"):
        _decode(b"\xff\xd8\xff" + noise)


def test_heic_avif_svg_pdf_are_refused(astronaut_rgb: np.ndarray) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    with pytest.raises(UnsupportedFormatError, match=r"^HEIC is not supported$"):
        _decode(heic)
    avif = _save(Image.fromarray(astronaut_rgb), "AVIF")  # a real one, from Pillow
    with pytest.raises(UnsupportedFormatError, match=r"^AVIF is not supported$"):
        _decode(avif)
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    with pytest.raises(UnsupportedFormatError, match=r"^SVG is not supported$"):
        _decode(svg)
    pdf = _save(Image.fromarray(astronaut_rgb), "PDF")
    with pytest.raises(UnsupportedFormatError, match=r"^PDF is not supported$"):
        _decode(pdf)


@pytest.mark.parametrize(("fmt", "reason"), [
    ("GIF", "animated GIF is not supported"),
    ("PNG", "animated PNG is not supported"),
    ("WEBP", "animated WebP is not supported"),
    ("TIFF", "multi-page TIFF is not supported"),
])
def test_multi_frame_files_are_refused(astronaut_rgb: np.ndarray, fmt: str, reason: str) -> None:
    data = _save(Image.fromarray(astronaut_rgb), fmt, save_all=True,
                 append_images=[Image.fromarray(astronaut_rgb[::-1])])
    with pytest.raises(UnsupportedFormatError, match=f"^{reason}$"):
        _decode(data)


def test_dng_like_tiff_is_refused(astronaut_rgb: np.ndarray) -> None:
    data = _save(Image.fromarray(astronaut_rgb[::8, ::8]), "TIFF",
                 tiffinfo={0xC612: b"\x01\x04\x00\x00", 0x00FE: 1})
    with pytest.raises(UnsupportedFormatError, match="DNG"):
        _decode(data)


def _png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _jpeg_header_only(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    sos = bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    return b"\xff\xd8" + _segment(0xFFC0, sof) + _segment(0xFFDA, sos) + b"\xff\xd9"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(("data", "message"), [
    (_png_header_only(30000, 30000), "image is 30000x30000 (900 MP), above the 64 MP limit"),
    (_jpeg_header_only(60000, 60000), "image is 60000x60000 (3600 MP), above the 64 MP limit"),
])
def test_huge_headers_are_refused_before_decoding(data: bytes, message: str) -> None:
    before = _peak_rss_mb()
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's bomb warning must not escape either
        with pytest.raises(ImageTooLargeError) as info:
            _decode(data)
    assert str(info.value) == message
    assert time.monotonic() - start < 0.5 * PATIENCE  # decoding would take far longer
    assert _peak_rss_mb() - before < 50


def test_above_pillows_own_limit_but_allowed_is_no_warning() -> None:
    # 100 MP is past Pillow's 89 MP warning: with our limit at 200 MP, the only outcome
    # is our own verdict (here: no pixel data), never Pillow's DecompressionBomb*.
    data = _png_header_only(10000, 10000, colour_type=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DecodeError):
            _decode(data, max_pixels=200_000_000)


def test_limit_is_inclusive(astronaut_rgb: np.ndarray) -> None:
    data = _save(Image.fromarray(astronaut_rgb), "PNG")
    assert _decode(data, max_pixels=512 * 512).width == 512
    with pytest.raises(ImageTooLargeError, match="512x512"):
        _decode(data, max_pixels=512 * 512 - 1)


# ----------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("fmt", codec.ENCODABLE)
def test_encode_round_trip(astronaut_rgb: np.ndarray, fmt: str) -> None:
    out = codec.encode(astronaut_rgb, fmt, quality=92)
    back = _decode(out)
    assert back.format == fmt
    if fmt in ("png", "bmp", "tiff"):
        np.testing.assert_array_equal(back.rgb, astronaut_rgb)
    else:
        assert np.abs(back.rgb.astype(int) - astronaut_rgb).mean() < 4


def test_jpeg_quality_is_applied(astronaut_rgb: np.ndarray) -> None:
    low = codec.encode(astronaut_rgb, "jpeg", quality=30)
    high = codec.encode(astronaut_rgb, "jpeg", quality=95)
    assert len(low) * 2 < len(high)
    # The Pillow path (taken when tags are kept) encodes the same pixels alike.
    with_tag = codec.encode(astronaut_rgb, "jpeg", quality=95, exif={"Make": "x"})
    a = _decode(high).rgb.astype(int)
    b = _decode(with_tag).rgb.astype(int)
    assert np.abs(a - b).max() <= 2


def test_encode_rejects_bad_input(astronaut_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError):
        codec.encode(astronaut_rgb[..., 0], "png")
    with pytest.raises(ValueError):
        codec.encode(astronaut_rgb.astype(np.float32), "png")
    with pytest.raises(ValueError):
        codec.encode(astronaut_rgb, "gif")
    with pytest.raises(ValueError):
        codec.encode(astronaut_rgb, "jpeg", quality=0)


@pytest.mark.parametrize(("fmt", "width"), [("jpeg", 65536), ("webp", 16384)])
def test_an_encoder_failure_is_an_encode_error(fmt: str, width: int) -> None:
    """Past the format's own size limit the encoder fails: an EncodeError, which every
    caller already treats as a failed redaction (nothing written)."""
    with pytest.raises(EncodeError, match="encoding failed") as info:
        codec.encode(np.zeros((2, width, 3), np.uint8), fmt)
    assert isinstance(info.value, RedactionError)


def test_suffix_and_output_format() -> None:
    assert [codec.suffix_for(f) for f in codec.ENCODABLE] == [
        ".jpg", ".png", ".webp", ".bmp", ".tif"]
    assert codec.output_format("webp", "same") == "webp"
    assert codec.output_format("gif", "same") == "png"
    assert codec.output_format("tiff", "jpeg") == "jpeg"
    with pytest.raises(ValueError):
        codec.suffix_for("gif")
    with pytest.raises(ValueError):
        codec.output_format("png", "heic")
