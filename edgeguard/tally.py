"""Counting what the pipeline redacted, for `edgeguard blur`'s summary and -v lines.

A *face* is a detection a model is confident of (score at least the profile's
``face_score``, 0.5); a *weak* region is one redacted although it scored lower, privacy
first: masked and turned faces score low, and so do stray patches. The detector marks each
detection (``Detection.weak``); this only counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeguard.geometry import Detection


@dataclass(frozen=True, slots=True)
class Tally:
    faces: int = 0  # regions of detections the models are confident of
    weak: int = 0  # regions redacted below that score (privacy first)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.faces + other.faces, self.weak + other.weak)

    def text(self) -> str:
        """``3 faces, 1 weak region``."""
        return (f"{self.faces} face{'' if self.faces == 1 else 's'}, "
                f"{self.weak} weak region{'' if self.weak == 1 else 's'}")


def tally(detections: tuple[Detection, ...] | list[Detection]) -> Tally:
    """Faces and weak regions among one image's detections (each has one region)."""
    weak = sum(1 for d in detections if d.weak)
    return Tally(faces=len(detections) - weak, weak=weak)
