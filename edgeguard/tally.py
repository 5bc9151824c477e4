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
    from collections.abc import Sequence

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


def tally(detections: Sequence[Detection], *, iou: float = 0.3,
          contain: float = 0.6) -> Tally:
    """Faces and weak regions among one image's detections.

    Two models may each find one face; detections that overlap (IoU above ``iou``, or
    ``contain`` of the smaller inside the other) count once, as a face when any of them is
    confident, else as one weak region."""
    groups: list[tuple[list[float], bool]] = []  # (box, weak) of each counted face
    for d in sorted(detections, key=lambda x: -x.score):
        b = d.box.as_list()
        for i, (g, weak) in enumerate(groups):
            iw = min(b[2], g[2]) - max(b[0], g[0])
            ih = min(b[3], g[3]) - max(b[1], g[1])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            a1 = (b[2] - b[0]) * (b[3] - b[1])
            a2 = (g[2] - g[0]) * (g[3] - g[1])
            if inter > iou * (a1 + a2 - inter) or inter >= contain * min(a1, a2):
                groups[i] = (g, weak and d.weak)
                break
        else:
            groups.append((b, d.weak))
    n_weak = sum(1 for _, w in groups if w)
    return Tally(faces=len(groups) - n_weak, weak=n_weak)
