"""The no-metadata-leak invariant: EXIF orientation, reading and the allow-list.

An output carries pixels and nothing else: no EXIF (so no GPS, serial numbers, maker notes or
embedded thumbnail, which shows the unredacted picture), XMP, IPTC, ICC profile, comments or
PNG text chunks. Only tags named in the allow-list (``output.keep_exif``) are re-created from
their values, tag by tag, never copied as a block (:func:`build_exif`); structure and opaque
blocks are never kept, whatever the list says. EXIF orientation (1-8) is applied to the pixels
(:func:`apply_orientation`), so the detector sees what a viewer shows and the output never
needs an orientation tag.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from typing import Any, Final

import cv2
import numpy as np
from PIL import ExifTags, Image

from edgeguard.codec.formats import _PIL_ERRORS, _short

logger = logging.getLogger(__name__)

# EXIF layout: tags live in IFD0, the Exif sub-IFD or the GPS sub-IFD.
_EXIF_IFD: Final = 0x8769
_GPS_IFD: Final = 0x8825
_ORIENTATION: Final = 0x0112
# Never carried over, whatever the allow-list says: orientation is applied to the pixels,
# the rest are structure (offsets, thumbnails, strips) or whole opaque blocks (maker notes,
# XMP, IPTC, ICC) that cannot be re-created tag by tag.
_NEVER_KEPT: Final = frozenset({
    _ORIENTATION, _EXIF_IFD, _GPS_IFD, 0xA005,  # Orientation, ExifOffset, GPSInfo, InteropOffset
    0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x0117, 0x011C,
    0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x014A, 0x0152, 0x0153,  # TIFF structure
    0x0201, 0x0202,  # JPEGInterchangeFormat(Length): the embedded thumbnail
    0x02BC, 0x83BB, 0x8773, 0x927C, 0xC612,  # XMP, IPTC, ICC, MakerNote, DNGVersion
    0x00FE, 0x00FF,  # (New)SubfileType
})
_IFD0_NAMES: Final = {name: tag for tag, name in sorted(ExifTags.TAGS.items())}
_GPS_NAMES: Final = {name: tag for tag, name in ExifTags.GPSTAGS.items()}


# ----------------------------------------------------------------------------- orientation


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright for an EXIF orientation value (1-8; others mean 1).

    The EXIF tag says where the stored rows and columns belong: 6 means row 0 is the
    visual right side, so the stored image is rotated 90 degrees clockwise to display.
    """
    if orientation == 2:
        return cv2.flip(rgb, 1)
    if orientation == 3:
        return cv2.rotate(rgb, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(rgb, 0)
    if orientation == 5:
        return cv2.transpose(rgb)
    if orientation == 6:
        return cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(rgb), -1)
    if orientation == 8:
        return cv2.rotate(rgb, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return rgb


def _read_exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except _PIL_ERRORS as exc:
        # A viewer that cannot read the EXIF block shows the stored pixels as they are;
        # decoding them the same way keeps output and detector consistent with that view.
        logger.warning("unreadable EXIF block ignored (%s)", _short(exc))
        return None


def _orientation(exif: Image.Exif | None) -> int:
    if exif is None:
        return 1
    value = exif.get(_ORIENTATION, 1)
    return value if type(value) is int and 1 <= value <= 8 else 1

# ----------------------------------------------------------------------------- EXIF policy


def _tag_for(name: str) -> tuple[int, int] | None:
    """(IFD, tag) where EXIF tag ``name`` belongs, or None if unknown or never kept."""
    if name in _GPS_NAMES:
        return _GPS_IFD, _GPS_NAMES[name]
    tag = _IFD0_NAMES.get(name)
    if tag is None or tag in _NEVER_KEPT:
        return None
    return (_EXIF_IFD if _in_exif_ifd(tag) else 0), tag


def _in_exif_ifd(tag: int) -> bool:
    # Exif 2.32 sub-IFD tag ranges; everything else known lives in IFD0.
    return (0x829A <= tag <= 0x829D or 0x8822 <= tag <= 0x8835 or 0x9000 <= tag <= 0x92FF
            or 0x9400 <= tag <= 0x940F or 0xA000 <= tag <= 0xA4FF)


def unknown_exif_names(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The names in an allow-list that are not keepable EXIF tags (for config checks)."""
    return tuple(n for n in names if _tag_for(n) is None)


def _pick_exif(exif: Image.Exif, names: tuple[str, ...]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    ifds: dict[int, Mapping[int, Any]] = {0: exif}
    for ifd in (_EXIF_IFD, _GPS_IFD):
        try:
            ifds[ifd] = exif.get_ifd(ifd)
        except _PIL_ERRORS as exc:
            logger.warning("unreadable EXIF sub-IFD 0x%04x ignored (%s)", ifd, _short(exc))
            ifds[ifd] = {}
    for name in names:
        where = _tag_for(name)
        if where is None:
            continue
        ifd, tag = where
        # GPS tag numbers overlap IFD0's, so GPS tags are only looked up in the GPS IFD;
        # the others are taken from either IFD (some writers misplace them).
        if ifd == _GPS_IFD:
            sources: tuple[Mapping[int, Any], ...] = (ifds[_GPS_IFD],)
        else:
            sources = (ifds[ifd], ifds[_EXIF_IFD if ifd == 0 else 0])
        for source in sources:
            if tag in source:
                kept[name] = source[tag]
                break
    return kept


def build_exif(tags: Mapping[str, Any]) -> bytes | None:
    """A fresh EXIF block (``b"Exif\\0\\0"`` + TIFF) holding only ``tags``; None if empty.

    Unknown names, never-kept tags and values Pillow cannot write are dropped with a
    warning rather than failing the image.
    """
    placed: dict[int, dict[int, Any]] = {0: {}, _EXIF_IFD: {}, _GPS_IFD: {}}
    for name, value in tags.items():
        where = _tag_for(name)
        if where is None:
            logger.warning("EXIF tag %r is not keepable; dropped", name)
            continue
        ifd, tag = where
        if _exif_bytes({ifd: {tag: value}}) is None:
            logger.warning("EXIF tag %r has a value that cannot be written; dropped", name)
            continue
        placed[ifd][tag] = value
    if not any(placed.values()):
        return None
    return _exif_bytes(placed)


def _exif_bytes(placed: Mapping[int, Mapping[int, Any]]) -> bytes | None:
    exif = Image.Exif()
    for tag, value in placed.get(0, {}).items():
        exif[tag] = value
    for ifd in (_EXIF_IFD, _GPS_IFD):
        if placed.get(ifd):
            exif[ifd] = dict(placed[ifd])
    try:
        return exif.tobytes()
    except (ValueError, TypeError, KeyError, struct.error, OverflowError, UnicodeError):
        return None
