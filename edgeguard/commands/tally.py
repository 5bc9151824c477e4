"""Counting what the pipeline redacted, for `edgeguard blur`'s summary and -v lines.

A *weak* region is one redacted although its score is below the model's own confident
threshold (MediaPipe's ``min_score_thresh``, ``min_score`` in models/manifest.toml: 0.6
for the full-range model). The profiles redact down to 0.15-0.3 (privacy first: masked
and turned faces score low), so a weak region is either such a face or a stray patch.
Everything that decides what counts is here: a second detection model changes
:func:`confident_score` (and :func:`tally`, if its detections say which model found them).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeguard import models
from edgeguard.config import Config
from edgeguard.pipeline import Redacted, detect_params


@dataclass(frozen=True, slots=True)
class Tally:
    faces: int = 0  # regions redacted, weak ones included
    weak: int = 0  # of which scored below the model's confident threshold

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.faces + other.faces, self.weak + other.weak)

    def text(self, confident: float | None = None) -> str:
        """``3 faces (1 weak)``; with ``confident``, ``(1 weak: scored under 0.6)``."""
        why = f": scored under {confident:g}" if confident is not None and self.weak else ""
        return f"{self.faces} face{'' if self.faces == 1 else 's'} ({self.weak} weak{why})"


def confident_score(cfg: Config) -> float:
    """The threshold the models that run under ``cfg`` call confident (the strictest)."""
    plan = detect_params(cfg).plan
    manifest = models.load_manifest()
    return max(manifest.models[name].min_score
               for name in {plan.whole_model, plan.tile_model})


def tally(result: Redacted, *, confident: float) -> Tally:
    """Faces and weak regions in one pipeline result (its detections pair with regions)."""
    weak = sum(1 for d in result.detections if d.score < confident)
    return Tally(faces=len(result.regions), weak=weak)
