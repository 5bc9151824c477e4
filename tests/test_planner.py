"""The view planner and the merger, on arrays (no model, no image)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from edgeguard import config
from edgeguard.detect.planner import (
    Level,
    PlanParams,
    absorb_contained,
    merge,
    plan,
    tile_is_flat,
)
from edgeguard.detect.profiles import PROFILES
from edgeguard.pipeline import detect_params

SIZES = [(4000, 3000), (3000, 4000), (1920, 1080), (1080, 1920), (1280, 720), (640, 480),
         (500, 375), (300, 400), (192, 192), (100, 60), (5000, 800), (64, 2000)]


# The profiles that run BlazeFace's multi-scale plan (balanced runs its whole-frame view
# beside CenterFace: test_balanced_plans_the_whole_frame_view_only).
TILED = tuple(p for p in PROFILES if p != "balanced")


def _params(profile: str) -> PlanParams:
    return detect_params(config.override(config.Config(), "detect", profile=profile)).plan


def _views(levels: tuple[Level, ...]) -> int:
    return sum(len(lv.tiles) for lv in levels)


def _starts_cover(starts: list[int], length: int, tile: int, face: int) -> bool:
    """Every ``face``-long interval inside [0, length) lies wholly inside one window."""
    return all(any(s <= x and x + face <= s + tile for s in starts)
               for x in range(0, max(1, length - face + 1)))


@pytest.mark.parametrize("profile", TILED)
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_face_size_has_a_level_where_the_model_sees_it_well(
        profile: str, width: int, height: int) -> None:
    p = _params(profile)
    levels = plan(width, height, p)
    assert levels[0].index == 0 and len(levels[0].tiles) == 1  # the whole frame
    finest = min(lv.face_range[0] for lv in levels)
    assert finest <= p.min_face * 4  # the budget can raise the floor, boundedly
    long_side = max(width, height)
    for f in np.geomspace(max(finest, 1.0), max(long_side, finest), 60):
        homes = [lv for lv in levels if lv.face_range[0] - 1e-6 <= f <= lv.face_range[1] + 1e-6]
        assert homes, f"{profile} {width}x{height}: no level for a {f:.1f} px face"
        for lv in homes:
            px = f * lv.scale  # the face's height in model-input pixels
            if lv.index == 0:
                assert px >= p.whole_face_lo - 1e-6
            else:
                assert min(p.fine_face_lo, p.face_lo) - 1e-6 <= px <= p.face_hi + 1e-6


@pytest.mark.parametrize("profile", TILED)
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_face_position_lies_wholly_inside_a_tile(
        profile: str, width: int, height: int) -> None:
    p = _params(profile)
    for lv in plan(width, height, p)[1:]:
        xs = sorted({x for x, _ in lv.tiles})
        ys = sorted({y for _, y in lv.tiles})
        assert len(lv.tiles) == len(xs) * len(ys)  # a grid
        face = math.floor(p.face_hi)  # the largest face the level is responsible for
        assert _starts_cover(xs, lv.width, lv.size, min(face, lv.width))
        assert _starts_cover(ys, lv.height, lv.size, min(face, lv.height))
        # and the windows stay on the image (only a frame smaller than a tile is padded)
        assert xs[0] == 0 and ys[0] == 0
        assert xs[-1] + lv.size >= lv.width and ys[-1] + lv.size >= lv.height


@pytest.mark.parametrize("profile", TILED)
def test_views_stay_within_the_budget(profile: str) -> None:
    p = _params(profile)
    for width, height in SIZES:
        levels = plan(width, height, p)
        budget = p.max_views + p.views_per_mp * width * height / 1e6
        finest = min(lv.face_range[0] for lv in levels)
        if finest < p.min_face * 4 * 0.95:  # not at the cap: the budget was met
            assert _views(levels) <= max(budget, 1 + 4 * 3)
    big = plan(4000, 3000, p)
    assert 20 < _views(big) < 400


def test_budget_trades_small_faces_for_views_and_no_budget_keeps_min_face() -> None:
    p = _params("thorough")
    unbounded = dataclasses.replace(p, max_views=0.0, views_per_mp=0.0)
    lv_unb = plan(4000, 3000, unbounded)
    lv_bud = plan(4000, 3000, p)
    assert _views(lv_bud) < _views(lv_unb)
    assert min(lv.face_range[0] for lv in lv_unb) == pytest.approx(p.min_face)
    # small frames are cheap: the budget leaves them the reliable view size
    small = plan(500, 375, p)
    assert min(lv.face_range[0] for lv in small) == pytest.approx(p.min_face)
    assert small[-1].scale * p.min_face == pytest.approx(p.face_lo)


def test_whole_frame_only_when_min_face_is_huge() -> None:
    p = dataclasses.replace(_params("thorough"), min_face=1e9)
    levels = plan(4000, 3000, p)
    assert len(levels) == 1 and levels[0].tiles == ((0, (192 - 144) // 2 * -1),)


def test_balanced_plans_the_whole_frame_view_only() -> None:
    for width, height in SIZES:
        levels = plan(width, height, _params("balanced"))
        assert len(levels) == 1 and len(levels[0].tiles) == 1


def test_bad_frame_is_an_error() -> None:
    with pytest.raises(ValueError):
        plan(0, 10, _params("thorough"))


def _face(x: float, y: float, side: float) -> np.ndarray:
    b = np.zeros(16, np.float32)
    b[:4] = [x, y, x + side, y + side]
    b[4::2] = x + side / 2
    b[5::2] = y + side / 2
    return b


def test_merge_joins_duplicates_from_overlapping_tiles() -> None:
    boxes = np.stack([_face(100, 100, 50), _face(101, 99, 50), _face(99, 101, 51)])
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    kb, ks = merge(boxes, scores, 0.3)
    assert kb.shape == (1, 16) and ks.tolist() == pytest.approx([0.9])
    assert kb[0, 0] == pytest.approx(100, abs=1.5)


def test_partial_box_cut_by_a_tile_border_is_absorbed_without_losing_coverage() -> None:
    full = _face(100, 100, 60)
    partial = _face(140, 105, 30)  # the right part, seen by a tile cut at x=170
    partial[2] = 172  # sticks out past the full box by 12 px
    kb, _ = merge(np.stack([full, partial]), np.array([0.9, 0.6], np.float32), 0.3)
    assert kb.shape[0] == 1
    x1, y1, x2, y2 = kb[0, :4]
    assert (x1, y1) == (100, 100) and x2 >= 172 and y2 >= 160


def test_distinct_nearby_faces_are_kept() -> None:
    boxes = np.stack([_face(100, 100, 50), _face(153, 100, 50), _face(100, 154, 50)])
    kb, _ = merge(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.3)
    assert kb.shape[0] == 3


def test_merge_keeps_faces_whose_best_score_reaches_min_score() -> None:
    lone = _face(500, 500, 40)  # one weak anchor: a typical false detection
    many = np.stack([_face(100 + d, 100 - d, 40) for d in range(6)])  # a weak real face
    boxes = np.concatenate([many, lone[None]])
    scores = np.array([0.25, 0.2, 0.2, 0.15, 0.15, 0.15, 0.25], np.float32)
    kb, _ = merge(boxes, scores, 0.3, min_score=0.5)
    assert kb.shape[0] == 0
    kb, ks = merge(boxes, scores, 0.3, min_score=0.2)
    assert kb.shape[0] == 2 and list(ks) == pytest.approx([0.25, 0.25])


def test_empty_inputs() -> None:
    kb, ks = merge(np.zeros((0, 16), np.float32), np.zeros(0, np.float32), 0.3)
    assert kb.shape == (0, 16) and ks.shape == (0,)
    kb, ks = absorb_contained(np.zeros((0, 16), np.float32), np.zeros(0, np.float32))
    assert kb.shape[0] == 0


def test_flat_tiles_are_skipped_and_textured_ones_kept() -> None:
    grey = np.full((100, 100), 128, np.uint8)
    grey[60:, 60:] = np.random.default_rng(0).integers(0, 255, (40, 40))
    assert tile_is_flat(grey, 4.0, 0, 0, 192, 3.0)
    assert not tile_is_flat(grey, 4.0, 200, 200, 192, 3.0)
    assert tile_is_flat(grey, 4.0, 1000, 1000, 192, 3.0)  # wholly outside: nothing to see
