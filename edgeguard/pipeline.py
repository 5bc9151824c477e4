"""The only place the steps are composed: decode -> plan -> detect -> redact -> encode.

(Interface fixed first so the daemon, CLI and bench can be built against it; the body
lands with the detector.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeguard.geometry import Detection, Region


@dataclass(frozen=True)
class Redacted:
    """A redacted image ready to write: encoded bytes with every metadata block dropped."""

    data: bytes
    format: str  # "jpeg" | "png" | "webp" | "bmp" | "tiff"
    suffix: str  # ".jpg", ".png", ... matching ``format``
    width: int
    height: int
    detections: tuple[Detection, ...]
    regions: tuple[Region, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
