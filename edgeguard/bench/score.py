"""Score redaction regions against annotated faces, pure numpy.

Same definitions as ``../shared/tools/eval_redaction.py`` (the shared scorer the issue's
targets are stated in), so that a figure printed by ``edgeguard bench`` and one printed by
that script for the same result file are the same number:

- A face is *protected* when at least 70% (``COVER``) of its annotated box, clipped to the
  image, lies inside the union of the redaction regions.
- Faces bucket by the clipped box height in pixels: 0-16, 16-32, 32-64, 64-128, >=128.
- *Excess* is the redacted area outside every annotated or ignored face, as a share of the
  image area, averaged over images.
- A *false positive* is a region of which less than 10% lies on an annotated or ignored face.
- An image without a result (missing from the file, or an error line) counts as *missing*
  and is scored as if nothing were redacted.

Coordinates round with Python's ``round`` (half to even), like the reference script; boxes
are ``[x1, y1, x2, y2]`` with exclusive x2/y2.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BUCKETS: tuple[tuple[int, int], ...] = ((0, 16), (16, 32), (32, 64), (64, 128), (128, 10**9))
BUCKET_LABELS: tuple[str, ...] = tuple(
    f"{lo}-{hi}" if hi < 10**9 else f">={lo}" for lo, hi in BUCKETS
)
COVER = 0.7
FP_OVERLAP = 0.1

Box = Sequence[float]
# basename -> regions, or None when the tool reported no result for that image
Results = dict[str, list[list[float]] | None]


@dataclass(frozen=True)
class SetScore:
    """Protection counts for one tool over one annotated set."""

    total: tuple[int, ...]  # annotated faces per bucket
    protected: tuple[int, ...]  # protected faces per bucket
    excess: float  # mean share of image area redacted outside faces, 0..1
    images: int
    missing: int  # images without a result
    false_positives: int
    regions: int

    def share(self, first_bucket: int = 0) -> float:
        """Protected share of faces in buckets ``first_bucket`` and up; 0 when there are none.

        The empty case is 0 rather than NaN to match the reference script's ``max(1, n)``.
        """
        tot = sum(self.total[first_bucket:])
        return sum(self.protected[first_bucket:]) / max(1, tot)

    @property
    def ge16(self) -> float:
        return self.share(1)

    @property
    def ge32(self) -> float:
        return self.share(2)

    @property
    def all(self) -> float:
        return self.share(0)

    @property
    def by_bucket(self) -> tuple[float, ...]:
        """Protected share per bucket; NaN for a bucket without faces."""
        return tuple(p / t if t else math.nan for p, t in zip(self.protected, self.total,
                                                              strict=True))

    @property
    def fp_per_image(self) -> float:
        return self.false_positives / max(1, self.images)

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": list(BUCKET_LABELS),
            "faces": list(self.total),
            "protected": list(self.protected),
            "share_by_bucket": [None if math.isnan(v) else v for v in self.by_bucket],
            "ge16": self.ge16,
            "ge32": self.ge32,
            "all": self.all,
            "excess": self.excess,
            "fp_per_image": self.fp_per_image,
            "images": self.images,
            "missing": self.missing,
            "false_positives": self.false_positives,
            "regions": self.regions,
        }


def _ints(box: Box) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (round(float(v)) for v in box[:4])
    return x1, y1, x2, y2


def bucket_of(height: float) -> int:
    """Index into ``BUCKETS`` for a face ``height`` pixels tall (>= 0)."""
    return next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= height < hi)


def parse_results(text: str) -> Results:
    """Regions per image basename from a result file's text.

    Accepts the peer wrappers' ``{"boxes": {path: [[x1,y1,x2,y2,score?]...] | null}}`` and
    ``edgeguard detect`` lines (``{"path", "faces": [{"region"|"box": [...]}]}`` or
    ``{"path", "error"}``). Raises ``ValueError`` on anything else.
    """
    text = text.strip()
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "boxes" in obj:
        boxes = obj["boxes"]
        if not isinstance(boxes, dict):
            raise ValueError("'boxes' must map paths to lists of boxes")
        return {os.path.basename(p): None if b is None else [list(x[:4]) for x in b]
                for p, b in boxes.items()}
    res: Results = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            o = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {n}: not JSON ({exc.msg})") from None
        if not isinstance(o, dict):
            raise ValueError(f"line {n}: not a JSON object")
        p = o.get("path") or o.get("file") or o.get("input")
        if not isinstance(p, str):
            raise ValueError(f"line {n}: no 'path'")
        faces = o.get("faces")
        if faces is None:
            res[os.path.basename(p)] = None
            continue
        res[os.path.basename(p)] = [list(f.get("region") or f.get("box")) for f in faces]
    return res


def load_results(path: str | os.PathLike[str]) -> Results:
    with open(path, encoding="utf-8") as fh:
        return parse_results(fh.read())


def score_set(images: Iterable[Mapping[str, Any]], results: Mapping[str, Sequence[Box] | None],
              *, min_px: float = 0.0) -> SetScore:
    """Score ``results`` (basename -> regions | None) against annotated ``images``.

    ``images`` are the entries of an annotations.json: ``file``, ``width``, ``height``,
    ``faces`` and optional ``ignore``. Faces shorter than ``min_px`` are left out.
    """
    nb = len(BUCKETS)
    tot = [0] * nb
    prot = [0] * nb
    excess_sum = 0.0
    n_img = missing = fp = n_regions = 0
    for im in images:
        w, h = int(im["width"]), int(im["height"])
        boxes = results.get(os.path.basename(im["file"]))
        if boxes is None:
            missing += 1
            boxes = []
        n_img += 1
        n_regions += len(boxes)
        mask = np.zeros((h, w), bool)
        for b in boxes:
            x1, y1, x2, y2 = _ints(b)
            # Slicing clips the far side; the near side is clipped at 0 explicitly because a
            # negative start would wrap around.
            mask[max(0, y1):max(0, min(h, y2)), max(0, x1):max(0, min(w, x2))] = True
        face_mask = np.zeros((h, w), bool)
        for g in [*im["faces"], *im.get("ignore", [])]:
            x1, y1, x2, y2 = _ints(g)
            face_mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)] = True
        for g in im["faces"]:
            x1, y1, x2, y2 = _ints(g)
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            gh = y2 - y1
            if gh <= 0 or x2 <= x1 or gh < min_px:
                continue
            k = bucket_of(gh)
            tot[k] += 1
            if mask[y1:y2, x1:x2].mean() >= COVER:
                prot[k] += 1
        excess_sum += float((mask & ~face_mask).sum()) / (w * h)
        for b in boxes:
            x1, y1, x2, y2 = _ints(b)
            on_face = face_mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
            if on_face.size == 0 or on_face.mean() < FP_OVERLAP:
                fp += 1
    return SetScore(total=tuple(tot), protected=tuple(prot), excess=excess_sum / max(1, n_img),
                    images=n_img, missing=missing, false_positives=fp, regions=n_regions)
