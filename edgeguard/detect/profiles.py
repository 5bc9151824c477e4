"""Search profiles: how hard the planner looks, chosen from measurements (see README).

Each profile names the models and the face-size band they are trusted with (in model-input
pixels, from benchmarks/calibrate_models.py), the smallest face worth a view, the view
budget, and the score thresholds. Config keys in [detect] override single values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Profile:
    whole_model: str  # model for the whole-frame view
    whole_face_lo: float  # smallest face (input px) the whole-frame model is trusted with
    tile_model: str  # model for tiles
    face_lo: float  # smallest face (input px) the tile model is reliable on
    face_hi: float  # largest face (input px) a tile level is responsible for (= tile overlap)
    min_face: float  # smallest face (source px) the plan guarantees a view for ...
    fine_face_lo: float  # ... at this size (input px) at least, when over the view budget
    max_views: float  # view budget per image: this many ...
    views_per_mp: float  # ... plus this many per megapixel (0, 0: no budget)
    max_upscale: float  # largest level scale (> 1 upsamples small images)
    candidate_score: float  # anchors scoring this in any view are merged
    min_score: float  # merged faces scoring this are redacted
    flat_std: float  # tiles whose grey std is below this are skipped (0: never)
    second_model: str = ""  # the second model ("centerface"), run once on the whole frame
    second_score: float = 0.5  # its detections scoring this are redacted
    second_megapixels: float = 1.0  # it sees the frame at about this many megapixels ...
    second_min_scale: float = 0.5  # ... but at this scale at least ...
    second_max_scale: float = 1.0  # ... and at this scale at most (> 1 enlarges small ones)
    second_box_scale: float = 1.0  # its boxes grow by this about their centre ...
    second_box_shift: float = 0.0  # ... and move down by this share of their height
    second_tile_pixels: float = 0.3e6  # its input in tiles of at most this many pixels
    second_tile_overlap: int = 96  # ... overlapping by this many (its memory: ~240 B/px)
    face_score: float = 0.5  # detections scoring this count as faces, the rest as weak
    solo_min_score: float = 0.3  # BlazeFace's threshold where it searches alone (the
    # camera's main-resolution search, which runs no second model): its own trade-off
    # Keeping weak faces seen by many anchors or views (a lower score with enough summed
    # support) and dropping boxes outside a tile level's size band were measured: both
    # traded recall for false detections along the same curve as the plain threshold (no
    # gain at equal excess), so neither is here.


# Measured on the five dev sets (README; benchmarks/second_model.py for the combined search,
# benchmarks/tune.py for BlazeFace's plan). BlazeFace's plan is the same for all three
# (full-range model everywhere, reliable from 14 input px, 44 px tile overlap); they differ in
# the smallest face planned for, the view budget and the score threshold.
#
# BlazeFace scores many masked, turned and blurred faces 0.02-0.3, where no threshold
# separates them from clutter, so `fast` alone leaks them. `balanced` and `thorough` add
# CenterFace once on the whole frame (about 1 megapixel, never below half size nor above full
# size: a 12 MP photo is searched at 0.5, a web photo at 1.0) at a low threshold (0.1: its
# masked faces score 0.1-0.3), with its box moved down by 0.15 of its height (on all four
# annotated sets the faces sit 0.05-0.12 of a CenterFace box lower than the box: chin and
# mask); BlazeFace then adds only what it is confident of (0.5), its strength being small
# open faces in large frames, which CenterFace at half size does not see.
_FAST = Profile(
    whole_model="full", whole_face_lo=14, tile_model="full", face_lo=14, face_hi=44,
    min_face=16, fine_face_lo=10, max_views=30, views_per_mp=10, max_upscale=2.0,
    candidate_score=0.3, min_score=0.3, flat_std=3.0,
    solo_min_score=0.3)
_BALANCED = replace(
    _FAST, min_face=1e9, max_views=40, views_per_mp=13.5, candidate_score=0.2,
    solo_min_score=0.2, min_score=0.5,
    second_model="centerface", second_score=0.1, second_box_shift=0.15,
    second_megapixels=0.5, second_min_scale=0.6, second_max_scale=1.0)
PROFILES: dict[str, Profile] = {
    "fast": _FAST,
    "balanced": _BALANCED,
    "thorough": replace(_BALANCED, min_face=16, max_views=40, views_per_mp=13.5,
                        candidate_score=0.15, solo_min_score=0.15, min_score=0.3,
                        second_megapixels=1.0, second_min_scale=0.75),
}
