"""Explore how BlazeFace and CenterFace combine: cache each model's raw detections once, then
score combinations (thresholds, CenterFace scales) offline, side by side.

usage:
  python benchmarks/second_model.py cache SET_DIR... --out DIR [--scales 1,0.5,0.33]
  python benchmarks/second_model.py score DIR [--bf 0.2,0.3] [--cf 0.2,0.3,0.4] ...

``cache`` runs, per image, the balanced BlazeFace search with its thresholds lowered to 0.05
(merged detections kept with their scores) and CenterFace on the whole frame at each scale
(threshold 0.05, NMS as the reference), and stores boxes, scores and seconds per image.
``score`` unions the two at the given thresholds through the product's own region rule
(redact.region_for) and scores with edgeguard.bench.score (the shared scorer's definitions):
unprotected share (>= 16 and >= 32 px), excess area, stray regions per image, and the summed
per-image model time. For exploring the design; `edgeguard bench` is the benchmark of record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeguard import config, models
from edgeguard.bench.score import score_set
from edgeguard.detect import profiles
from edgeguard.detect.planner import merge
from edgeguard.geometry import Box
from edgeguard.redact import region_for


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _bf_candidates(det: Any, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Every BlazeFace view's candidates (before merging) and the seconds the views took."""
    from edgeguard.detect.detector import DetectStats, _pyramid
    from edgeguard.detect.planner import plan

    h, w = rgb.shape[:2]
    t0 = time.perf_counter()
    levels = plan(w, h, det.params.plan)
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for level, image in zip(levels, _pyramid(rgb, levels), strict=True):
        b, s = det._run_level(level, image, DetectStats())
        boxes += b
        scores += s
    secs = time.perf_counter() - t0
    if not boxes:
        return np.zeros((0, 16), np.float32), np.zeros((0,), np.float32), secs
    return np.concatenate(boxes), np.concatenate(scores), secs


def cache(a: argparse.Namespace) -> None:
    from edgeguard.detect.dnn import CenterFaceRunner
    from edgeguard.pipeline import Pipeline

    prof = profiles.PROFILES["balanced"]
    profiles.PROFILES["balanced"] = dataclasses.replace(
        prof, candidate_score=0.05, min_score=0.05,
        **({} if not a.bf_extra else json.loads(a.bf_extra)))
    cfg = config.override(config.Config(), "detect", profile="balanced", threads=2)
    pipe = Pipeline(cfg)
    man = models.load_manifest()
    net = CenterFaceRunner(models.verify(man.models["centerface"], models.default_models_dir()))
    scales = [float(s) for s in a.scales.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in a.sets:
        ann = json.loads((Path(s) / "annotations.json").read_text())
        rows: dict[str, Any] = {"annotations": ann, "images": {}}
        for im in ann["images"][: a.limit or None]:
            rgb = _rgb(Path(s) / im["file"])
            bb, bs, secs = _bf_candidates(pipe.detector, rgb)
            row: dict[str, Any] = {"bf": (bb, bs), "bf_s": secs, "cf": {}}
            for sc in scales:
                t0 = time.perf_counter()
                boxes, scores = net.detect(rgb, scale=sc, threshold=0.05)
                row["cf"][sc] = (boxes[:, :4].copy(), scores, time.perf_counter() - t0)
            rows["images"][Path(im["file"]).name] = row
        name = Path(s).name
        with (out / f"{name}.pkl").open("wb") as fh:
            pickle.dump(rows, fh)
        print(f"{name}: {len(rows['images'])} images cached", file=sys.stderr)


def _regions(boxes: np.ndarray, w: int, h: int, expand: float) -> list[list[float]]:
    out = []
    for b in boxes:
        r = region_for(Box(*map(float, b[:4])), expand=expand, width=w, height=h)
        if r is not None:
            out.append([float(v) for v in r.as_list()])
    return out


def score(a: argparse.Namespace) -> None:
    bfs = [float(t) for t in a.bf.split(",")]
    cfs = [float(t) for t in a.cf.split(",")]
    grows = [float(g) for g in a.cf_grow.split(",")]
    for pkl in sorted(Path(a.dir).glob("*.pkl")):
        rows = pickle.loads(pkl.read_bytes())
        images = rows["annotations"]["images"][: a.limit or None]
        scales = sorted(next(iter(rows["images"].values()))["cf"], reverse=True)
        if a.scales:
            scales = [s for s in scales if s in {float(x) for x in a.scales.split(",")}]
        print(f"\n## {pkl.stem} ({len(images)} images)")
        print("| design | leak >=16 | leak >=32 | excess | strays/img | model s/img |")
        print("|---|---|---|---|---|---|")
        for sc in [None, *scales]:
            for tb, tc, grow in [(tb, tc, g) for tb in bfs
                                 for tc in (cfs if sc is not None else [None])
                                 for g in (grows if sc is not None else [1.0])]:
                if True:
                    res: dict[str, list[list[float]] | None] = {}
                    secs = 0.0
                    for im in images:
                        row = rows["images"][Path(im["file"]).name]
                        w, h = int(im["width"]), int(im["height"])
                        bb, bs = row["bf"]
                        parts = []
                        if tb < 1:
                            ok = bs >= tb
                            mb, _ = merge(bb[ok], bs[ok], 0.3, min_score=tb)
                            parts.append(mb[:, :4])
                        secs += row["bf_s"] if tb < 1 else 0.0
                        if sc is not None and tc is not None:
                            cb, cs, ct = row["cf"][sc]
                            cb = cb[cs >= tc]
                            c = (cb[:, :2] + cb[:, 2:4]) / 2
                            half = (cb[:, 2:4] - cb[:, :2]) * grow / 2
                            gb = np.concatenate([c - half, c + half], axis=1)
                            hh = cb[:, 3] - cb[:, 1]
                            gb[:, 1] += a.cf_shift * hh
                            gb[:, 3] += (a.cf_shift + a.cf_down) * hh
                            parts.append(gb)
                            secs += ct
                        boxes = np.concatenate(parts) if parts else np.zeros((0, 4))
                        res[Path(im["file"]).name] = _regions(boxes, w, h, a.expand)
                    st = score_set(images, res)
                    name = (f"bf {tb:g}" if tb < 1 else "") + (
                        f" + cf@{sc:g} {tc:g} x{grow:g}" if sc is not None else "")
                    print(f"| {name.strip()} | {100 - 100 * st.ge16:.1f}% | "
                          f"{100 - 100 * st.ge32:.1f}% | {100 * st.excess:.1f}% | "
                          f"{st.fp_per_image:.1f} | {secs / len(images):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("sets", nargs="+")
    c.add_argument("--out", required=True)
    c.add_argument("--scales", default="1,0.5,0.33")
    c.add_argument("--limit", type=int, default=0)
    c.add_argument("--bf-extra", default="", help="JSON of Profile fields for BlazeFace")
    s = sub.add_parser("score")
    s.add_argument("dir")
    s.add_argument("--bf", default="0.2,0.3,1")
    s.add_argument("--cf", default="0.2,0.3,0.4,0.5")
    s.add_argument("--expand", type=float, default=1.3)
    s.add_argument("--cf-grow", default="1", help="CenterFace boxes grown by these factors")
    s.add_argument("--cf-down", type=float, default=0.0,
                   help="CenterFace boxes' bottom moved down by this share of their height")
    s.add_argument("--cf-shift", type=float, default=0.0,
                   help="CenterFace boxes moved down by this share of their height")
    s.add_argument("--scales", default="", help="only these CenterFace scales")
    s.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    cache(a) if a.cmd == "cache" else score(a)


if __name__ == "__main__":
    main()
