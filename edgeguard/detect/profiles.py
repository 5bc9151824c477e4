"""Search profiles: how hard the planner looks, chosen from measurements (see README).

Each profile names the models and the face-size band they are trusted with (in model-input
pixels, from benchmarks/calibrate_models.py), the smallest face worth a view, the view
budget, and the score thresholds. Config keys in [detect] override single values.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    min_score: float  # merged faces scoring this are redacted ...
    low_score: float  # ... and those scoring this, when their support is at least ...
    min_support: float  # ... this (sum of their anchors' scores over all views)
    flat_std: float  # tiles whose grey std is below this are skipped (0: never)
    band_lo: float = 0.0  # tile levels drop boxes under band_lo x their smallest face
    band_hi: float = 0.0  # ... and over band_hi x their largest (0: no limit)
    # low_score/min_support (keep weak faces seen by many anchors or views) and the size
    # band were measured: both trade recall for false detections along the same curve as
    # the plain threshold (no gain at equal excess), so the profiles leave them off.


# Measured on the five dev sets together (README, benchmarks/tune.py). The plan is the same
# for all three (full-range model everywhere, reliable from 14 input px, 44 px tile overlap);
# they differ in the smallest face planned for (16 px, the floor; 12 px costs a
# third more views on web-sized photos for +1 point on the masked set), in the view budget
# (how far the finest level shrinks on large frames), and in the score threshold, which is
# what trades protected share against excess area: BlazeFace scores many masked or turned
# faces 0.1-0.3, and so does the clutter of a 12 MP frame.
PROFILES: dict[str, Profile] = {
    "fast": Profile(
        whole_model="full", whole_face_lo=14, tile_model="full", face_lo=14, face_hi=44,
        min_face=16, fine_face_lo=10, max_views=30, views_per_mp=10, max_upscale=2.0,
        candidate_score=0.3, min_score=0.3, low_score=0.3, min_support=0.0, flat_std=3.0),
    "balanced": Profile(
        whole_model="full", whole_face_lo=14, tile_model="full", face_lo=14, face_hi=44,
        min_face=16, fine_face_lo=10, max_views=40, views_per_mp=13.5, max_upscale=2.0,
        candidate_score=0.2, min_score=0.2, low_score=0.2, min_support=0.0, flat_std=3.0),
    "thorough": Profile(
        whole_model="full", whole_face_lo=14, tile_model="full", face_lo=14, face_hi=44,
        min_face=12, fine_face_lo=10, max_views=60, views_per_mp=20, max_upscale=2.0,
        candidate_score=0.15, min_score=0.15, low_score=0.15, min_support=0.0, flat_std=3.0),
}
