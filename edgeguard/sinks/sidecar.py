"""The sidecar: ``NAME.json`` beside a redacted output, with counts, scores and timings.

One text for the daemon's outbox and `edgeguard blur` (``output.sidecar = true``); it never
holds pixels or EXIF.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from edgeguard import __version__
from edgeguard.tally import tally

if TYPE_CHECKING:
    from edgeguard.config import Config
    from edgeguard.pipeline import Redacted


def sidecar_text(result: Redacted, cfg: Config) -> str:
    found = tally(result.detections)
    return json.dumps({
        "edgeguard": __version__,
        "faces": found.faces,
        "weak": found.weak,
        "width": result.width,
        "height": result.height,
        "format": result.format,
        "profile": cfg.detect.profile,
        "mode": cfg.redact.mode,
        "regions": [r.as_list() for r in result.regions],
        "scores": [round(d.score, 3) for d in result.detections],
        "weak_regions": [d.weak for d in result.detections],
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
    }, sort_keys=True) + "\n"
