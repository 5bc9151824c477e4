"""The hostile-input corpus: what people and programs will drop into an inbox, generated.

Nothing here is a committed binary: every case is built from scikit-image's public-domain
astronaut portrait (one frontal face) or from seeded random bytes, so a fresh clone gets
the same corpus. Each :class:`Case` says what the daemon must do with it:

- ``REDACT``: an output appears; for ``face=True`` the astronaut's face in it is destroyed;
- ``FAIL``: the raw file ends in failed/ with a ``.reason`` matching ``reason``;
- ``EITHER``: one of the two (a truncation that happens to keep every pixel may decode).

Special entries (links, FIFOs, folders...) and files changing under the daemon are made
by the tests themselves; they need a live inbox, not bytes.
"""

from __future__ import annotations

import enum
import io
import os
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import piexif
from PIL import Image

# The astronaut's face in the 512x512 original: the detector's box is about
# (172, 67)-(279, 174). Tests compare the inner part, as fractions of the width and height.
FACE_BOX = (0.37, 0.17, 0.51, 0.31)  # x1, y1, x2, y2


class Expect(enum.Enum):
    REDACT = "redacted"
    FAIL = "failed"
    EITHER = "redacted or failed"


@dataclass(frozen=True)
class Case:
    name: str | bytes  # the inbox name (bytes: not UTF-8)
    data: bytes
    kind: str  # the class it is reported under
    expect: Expect
    reason: str = ""  # regex for the .reason's first line (FAIL and EITHER)
    face: bool = False  # the decoded image shows the face where FACE_BOX says

    @property
    def fs_name(self) -> bytes:
        return os.fsencode(self.name)


def save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def face_box(width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = FACE_BOX
    return int(x1 * width), int(y1 * height), int(x2 * width), int(y2 * height)


def face_destroyed(raw: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(mean absolute change, share of detail kept) inside the face's inner box of an
    upright astronaut image ``raw`` and its output ``out``."""
    x1, y1, x2, y2 = face_box(raw.shape[1], raw.shape[0])
    a = raw[y1:y2, x1:x2].astype(np.float32)
    b = out[y1:y2, x1:x2].astype(np.float32)
    change = float(np.abs(a - b).mean())
    detail_a = float(cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_32F).std())
    detail_b = float(cv2.Laplacian(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), cv2.CV_32F).std())
    return change, detail_b / max(detail_a, 1e-6)


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def with_segments(jpeg: bytes, segments: bytes) -> bytes:
    """``segments`` inserted right after a JPEG's SOI marker."""
    return jpeg[:2] + segments + jpeg[2:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_png_chunk(png: bytes, chunk: bytes) -> bytes:
    """``chunk`` inserted right after a PNG's IHDR."""
    end_ihdr = 8 + 8 + 13 + 4
    return png[:end_ihdr] + chunk + png[end_ihdr:]


# -- decompression bombs: headers that claim huge sizes -------------------------------------


def png_header(width: int, height: int, colour: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def png_zero_bomb(width: int, height: int) -> bytes:
    """A real, complete grey PNG of zeros: a few hundred KB that inflate to width*height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b""))


def jpeg_header(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    sos = bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])
    return b"\xff\xd8" + segment(0xFFC0, sof) + segment(0xFFDA, sos) + b"\xff\xd9"


def gif_canvas_bomb() -> bytes:
    """A 65535x65535 logical screen holding one 1x1 frame."""
    head = b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + bytes(6)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame + b"\x3b"


def tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one strip claims width x height RGB pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 2), (273, 4, 1, 8), (277, 3, 1, 3), (278, 4, 1, height),
               (279, 4, 1, 1 << 30)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, count, value) for tag, typ, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8 + 16) + bytes(16) + ifd + bytes(4)


def bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 14 + 40) + info + bytes(64)


def webp_header(width: int, height: int) -> bytes:
    """A lossless (VP8L) WebP header claiming width x height (at most 16384 each)."""
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes(32)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def ztxt_bomb(png: bytes, inflated: int) -> bytes:
    """A PNG with a zTXt chunk that inflates to ``inflated`` bytes."""
    text = zlib.compress(bytes(inflated), 9)
    return with_png_chunk(png, png_chunk(b"zTXt", b"Comment\x00\x00" + text))


# -- the corpus -----------------------------------------------------------------------------


def _truncation_offsets(n: int) -> list[int]:
    fixed = [1, 2, 3, 8, 33, 100, 600]
    fractions = [0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99]
    tail = [n - 64, n - 12, n - 2, n - 1]
    return sorted({c for c in fixed + [int(n * f) for f in fractions] + tail if 0 < c < n})


def _huge_exif(face: np.ndarray) -> bytes:
    """A ~64 KB EXIF block: GPS, a serial, a thumbnail of the raw face, a big maker note."""
    thumb = save(Image.fromarray(face[::4, ::4]), "JPEG", quality=95)
    exif: dict[int, object] = {piexif.ExifIFD.BodySerialNumber: b"SN-HOSTILE-0001"}
    base = {
        "0th": {piexif.ImageIFD.Make: b"HostileCam", piexif.ImageIFD.Model: b"Model-H"},
        "Exif": exif,
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((51, 1), (30, 1), (1234, 100))},
        "thumbnail": thumb,
    }
    room = 65_000 - len(piexif.dump(base)) - 64
    exif[piexif.ExifIFD.MakerNote] = b"MAKERNOTE-HOSTILE" + bytes(max(0, room))
    data: bytes = piexif.dump(base)
    return data


def _orientation_exif(value: int) -> bytes:
    return piexif.dump({"0th": {piexif.ImageIFD.Orientation: value}})


def _canvas(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """The portrait scaled to ``height`` and centred on a grey canvas: a 1080p-like frame."""
    side = height
    face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    out = np.full((height, width, 3), 96, np.uint8)
    x0 = (width - side) // 2
    out[:, x0:x0 + side] = face
    return out


def corpus(rgb: np.ndarray, *, max_pixels: int) -> list[Case]:
    """The static cases, for an inbox whose ``input.max_pixels`` is ``max_pixels``."""
    rng = np.random.default_rng(7)
    img = Image.fromarray(rgb)
    small = Image.fromarray(cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA))
    jpeg = save(img, "JPEG", quality=90)
    cases: list[Case] = []

    def add(name: str | bytes, data: bytes, kind: str, expect: Expect, reason: str = "",
            face: bool = False) -> None:
        cases.append(Case(name, data, kind, expect, reason, face))

    # Empty files and random bytes under image names.
    for name in ("empty.jpg", "empty.png", "empty.heic"):
        add(name, b"", "empty", Expect.FAIL, r"^empty file$")
    for i, ext in enumerate(("jpg", "png", "webp", "gif", "tif", "bmp", "heic", "avif")):
        add(f"random-{i}.{ext}", rng.bytes(int(rng.integers(16, 65536))), "random bytes",
            Expect.FAIL, r"not an image|truncated or corrupt|not supported")
    for magic, label in ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
                         (b"RIFF\x00\x10\x00\x00WEBPVP8 ", "WebP"), (b"GIF89a", "GIF"),
                         (b"II*\x00", "TIFF"), (b"BM", "BMP")):
        add(f"magic-then-noise.{label.lower()}", magic + rng.bytes(4096), "random bytes",
            Expect.FAIL, rf"truncated or corrupt {label}|corrupt {label}|invalid size")

    # Truncations of real files at many offsets.
    sources = {
        "jpg": jpeg,
        "progressive.jpg": save(img, "JPEG", quality=90, progressive=True),
        "png": save(img, "PNG"),
        "webp": save(img, "WEBP", quality=80),
        "lossless.webp": save(img, "WEBP", lossless=True),
    }
    for label, data in sources.items():
        for cut in _truncation_offsets(len(data)):
            add(f"cut-{cut:07d}-{label}", data[:cut], "truncated", Expect.EITHER,
                r"truncated or corrupt|not an image|invalid size", face=True)
    # A failed copy: the tail of a JPEG replaced by zeros (the size looks right).
    add("zero-tail.jpg", jpeg[: len(jpeg) // 2] + bytes(len(jpeg) - len(jpeg) // 2),
        "truncated", Expect.FAIL, r"truncated or corrupt JPEG")

    # Decompression bombs: headers claiming huge sizes, and real inflating bodies.
    big = int(max_pixels ** 0.5) + 1
    for name, data, reason in (
        ("bomb-header.png", png_header(30000, 30000), r"image is 30000x30000"),
        ("bomb-header.jpg", jpeg_header(60000, 60000), r"image is 60000x60000"),
        ("bomb-canvas.gif", gif_canvas_bomb(), r"image is 65535x65535|too large"),
        ("bomb-header.tif", tiff_header(100_000, 100_000), r"image is 100000x100000"),
        ("bomb-header.bmp", bmp_header(50_000, 50_000), r"image is 50000x50000"),
        ("bomb-header.webp", webp_header(16384, 16384), r"WebP canvas is too large"),
        ("bomb-inflating.png", png_zero_bomb(big, big), rf"image is {big}x{big}"),
    ):
        add(name, data, "decompression bomb", Expect.FAIL, reason)
    # Just inside the limit: a few hundred KB that decode to max_pixels. Allowed, and the
    # memory it takes is the worst case the test measures.
    side = int(max_pixels ** 0.5)
    add("bomb-at-the-limit.png", png_zero_bomb(side, side), "decompression bomb",
        Expect.REDACT)
    add("bomb-ztxt.png", ztxt_bomb(save(img, "PNG"), 200_000_000), "decompression bomb",
        Expect.FAIL, r"PNG \(Decompressed data too large")

    # Huge metadata: it must all be dropped, the pixels redacted.
    huge = _huge_exif(rgb)
    add("exif-64k.jpg", with_segments(jpeg, segment(0xFFE1, huge)), "huge metadata",
        Expect.REDACT, face=True)
    many = b"".join(segment(0xFFE2, b"ICC_PROFILE\x00" + bytes([i % 256, 200]) +
                            rng.bytes(60_000)) for i in range(160))
    add("app-segments-9mb.jpg", with_segments(jpeg, many), "huge metadata", Expect.REDACT,
        face=True)
    add("exif-garbage.jpg", with_segments(jpeg, segment(0xFFE1, b"Exif\x00\x00" +
                                                         rng.bytes(30_000))),
        "huge metadata", Expect.REDACT, face=True)
    png = save(img, "PNG")
    add("exif-2mb.png", with_png_chunk(png, png_chunk(b"eXIf", huge[6:] + bytes(2_000_000))),
        "huge metadata", Expect.REDACT, face=True)
    add("xmp-1mb.webp", save(img, "WEBP", quality=85, exif=huge,
                             xmp=b"<x:xmpmeta>" + bytes(1_000_000) + b"</x:xmpmeta>"),
        "huge metadata", Expect.REDACT, face=True)
    # Orientation 6: stored on its side; the output is upright (the face where it belongs).
    side_on = np.ascontiguousarray(np.rot90(rgb, 1))  # rotate 90 anticlockwise
    add("orientation-6.jpg", save(Image.fromarray(side_on), "JPEG", quality=90,
                                  exif=_orientation_exif(6)), "huge metadata", Expect.REDACT,
        face=True)

    # Pixel formats.
    grey = img.convert("L")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:64, :64, 3] = 0  # a transparent corner
    ok, png16 = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]).astype(np.uint16)
                             * 257)
    assert ok
    for name, data in (
        ("cmyk.jpg", save(img.convert("CMYK"), "JPEG", quality=90)),
        ("grey.jpg", save(grey, "JPEG", quality=90)),
        ("grey.png", save(grey, "PNG")),
        ("grey16.png", save(Image.fromarray(np.asarray(grey).astype(np.uint16) * 257), "PNG")),
        ("rgb16.png", png16.tobytes()),
        ("rgba.png", save(Image.fromarray(rgba), "PNG")),
        ("la.png", save(grey.convert("LA"), "PNG")),
        ("palette.png", save(img.quantize(256), "PNG")),
        ("palette-transparent.png", save(img.quantize(255), "PNG", transparency=0)),
        ("single-frame.gif", save(img.quantize(256), "GIF")),
        ("plain.bmp", save(img, "BMP")),
        ("lzw.tif", save(img, "TIFF", compression="tiff_lzw")),
        ("cmyk.tif", save(img.convert("CMYK"), "TIFF")),
        ("lossy.webp", save(img, "WEBP", quality=80)),
        ("alpha-lossless.webp", save(Image.fromarray(rgba), "WEBP", lossless=True)),
        ("progressive.jpg", sources["progressive.jpg"]),
        ("frame-1080p.jpg", save(Image.fromarray(_canvas(rgb, 1920, 1080)), "JPEG",
                                 quality=90)),
    ):
        add(name, data, "pixel format", Expect.REDACT, face=name != "frame-1080p.jpg")
    add("tiny-64px.jpg", save(small.resize((64, 64)), "JPEG"), "pixel format", Expect.REDACT)

    # Several frames, and formats that are refused by name.
    flipped = Image.fromarray(np.ascontiguousarray(rgb[:, ::-1]))
    for name, data, reason in (
        ("animated.gif", save(img, "GIF", save_all=True, append_images=[flipped]),
         r"^animated GIF is not supported$"),
        ("multi-page.tif", save(img, "TIFF", save_all=True, append_images=[flipped]),
         r"^multi-page TIFF is not supported$"),
        ("animated.png", save(img, "PNG", save_all=True, append_images=[flipped]),
         r"^animated PNG is not supported$"),
        ("animated.webp", save(img, "WEBP", save_all=True, append_images=[flipped]),
         r"^animated WebP is not supported$"),
        ("photo.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + rng.bytes(4000),
         r"^HEIC is not supported$"),
        ("photo.avif", save(img, "AVIF"), r"^AVIF is not supported$"),
        ("scan.pdf.jpg", save(img, "PDF"), r"^PDF is not supported$"),
        ("vector.svg.png", b'<svg xmlns="http://www.w3.org/2000/svg"/>',
         r"^SVG is not supported$"),
        ("layers.psd.jpg", b"8BPS\x00\x01" + rng.bytes(500), r"Photoshop PSD"),
    ):
        add(name, data, "multi-frame or foreign", Expect.FAIL, reason)

    # Names: every one of them must come out under its own (maybe shortened) name.
    face = save(small, "JPEG", quality=90)
    names: list[str | bytes] = [
        "line\nbreak.jpg", "tab\there.jpg", "-rf.jpg", "--version.jpg", "-.jpg",
        "été 照片 😀.jpg", "e\u0301te\u0301-nfd.jpg", "zero\u200bwidth.jpg",
        "quotes 'single' \"double\" $(id) `id` ;.jpg", "back\\slash.jpg", "UPPER.JPEG",
        "no-extension", "a.b.c.d", "wrong-extension.png",
        "a" * 251 + ".jpg",  # 255 bytes, an image suffix
        "b" * 255,  # 255 bytes, no suffix: the output adds ".jpg"
        "照" * 83 + "xx.jpg",  # 255 bytes of UTF-8, three to a character
        b"latin1-caf\xe9.jpg",  # not UTF-8
    ]
    for odd in names:
        add(odd, face, "hostile name", Expect.REDACT, face=True)
    bad_names: list[str | bytes] = ["c" * 255, "d" * 250 + ".jpeg", b"bad-\xff\xfe-bytes.jpg",
                                    "bad\nline.jpg"]
    for odd in bad_names:
        add(odd, rng.bytes(700), "hostile name", Expect.FAIL, r"not an image")
    # The same bytes under two names: two outputs, neither replacing the other.
    add("twin-a.jpg", face, "identical twice", Expect.REDACT, face=True)
    add("twin-b.jpg", face, "identical twice", Expect.REDACT, face=True)
    return cases


