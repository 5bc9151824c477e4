"""Search profiles: how hard the planner looks, chosen from measurements (see README).

Each profile names the models and the face-size band they are trusted with (in model-input
pixels, from benchmarks/calibrate_models.py), the smallest face worth a view, and the score
thresholds. Config keys in [detect] override single values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    whole_model: str  # model for the whole-frame view
    whole_face_lo: float  # smallest face (input px) the whole-frame model is trusted with
    tile_model: str  # model for tiles
    face_lo: float  # smallest face (input px) the tile model is trusted with
    face_hi: float  # largest face (input px) a tile level is responsible for
    min_face: float  # smallest face (source px) the plan guarantees a view for
    max_upscale: float  # largest level scale (> 1 upsamples small images)
    candidate_score: float  # anchors scoring this in any view are merged
    min_score: float  # merged faces scoring this are redacted
    flat_std: float  # tiles whose grey std is below this are skipped (0: never)
    verify_model: str = ""  # second opinion for faces scoring under accept_score
    accept_score: float = 1.0
    verify_score: float = 0.5
    verify_face: float = 32.0  # face size (input px) in the verification view


PROFILES: dict[str, Profile] = {
    "fast": Profile("full", 16, "full", 14, 42, 24, 1.0, 0.35, 0.45, 4.0),
    "balanced": Profile("full", 14, "full", 12, 40, 18, 1.5, 0.3, 0.4, 3.0),
    "thorough": Profile("full", 12, "full", 10, 36, 14, 2.0, 0.25, 0.35, 2.0),
}
