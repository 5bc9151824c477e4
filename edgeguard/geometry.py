"""Boxes and detections: small frozen value types shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels, x2/y2 exclusive (x1 + width)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True, slots=True)
class Detection:
    """One face: its box and keypoints (BlazeFace six, CenterFace five) in source-image
    pixels, its score, and whether it is *weak*: kept below the score at which the models
    are confident, because a privacy appliance redacts what may be a face."""

    box: Box
    score: float
    keypoints: tuple[tuple[float, float], ...] = field(default=())
    weak: bool = False


@dataclass(frozen=True, slots=True)
class Region:
    """The exact pixel rectangle a redactor changes: integer, x2/y2 exclusive, clipped."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]
