"""Does a CLAHE contrast pass before detection rescue dark and backlit faces? (issue: the
original design claims it does.) Measured on the darkest photos of the annotated sets.

usage: python benchmarks/clahe.py SET_DIR... [--profile balanced] [--share 0.15]

Takes the ``share`` of each set's photos with the darkest faces (mean luma inside the
annotated boxes) and the ``share`` with the strongest backlight (image mean luma minus face
mean luma), runs the profile's search on each photo as it is and after CLAHE on the L channel
of Lab (clip 2.0, 8x8 tiles, OpenCV's defaults in most recipes), and prints the unprotected
share (>= 16 px), excess and seconds per image of both, side by side.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from edgeguard import config
from edgeguard.bench.score import score_set


def _clahe(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _face_luma(grey: np.ndarray, faces: list[list[float]]) -> float:
    vals = [grey[max(0, int(y1)):int(y2), max(0, int(x1)):int(x2)].mean()
            for x1, y1, x2, y2 in faces if x2 > x1 + 1 and y2 > y1 + 1]
    return float(np.mean(vals)) if vals else 255.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--profile", default="balanced")
    ap.add_argument("--share", type=float, default=0.15)
    a = ap.parse_args()
    from edgeguard.pipeline import Pipeline

    pipe = Pipeline(config.override(config.Config(), "detect", profile=a.profile))
    print("| set | photos | tool | leak >=16 | excess | s/img |")
    print("|---|---:|---|---:|---:|---:|")
    for s in a.sets:
        ann = json.loads((Path(s) / "annotations.json").read_text())
        rows = []
        for im in ann["images"]:
            if not im["faces"]:
                continue
            bgr = cv2.imread(str(Path(s) / im["file"]), cv2.IMREAD_COLOR)
            grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            face = _face_luma(grey, im["faces"])
            rows.append((face, float(grey.mean()) - face, im))
        n = max(1, int(len(rows) * a.share))
        dark = [r[2] for r in sorted(rows, key=lambda r: r[0])[:n]]
        backlit = [r[2] for r in sorted(rows, key=lambda r: -r[1])[:n]]
        for label, images in (("dark faces", dark), ("backlit", backlit)):
            for tool, prep in (("as is", None), ("CLAHE", _clahe)):
                res: dict[str, list[list[float]] | None] = {}
                t0 = time.perf_counter()
                for im in images:
                    bgr = cv2.imread(str(Path(s) / im["file"]), cv2.IMREAD_COLOR)
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    if prep is not None:
                        rgb = prep(rgb)
                    _, regions = pipe.find(rgb)
                    res[Path(im["file"]).name] = [[float(v) for v in r.as_list()]
                                                  for r in regions]
                secs = (time.perf_counter() - t0) / len(images)
                sc = score_set(images, res)
                print(f"| {Path(s).name} {label} | {len(images)} | {tool} | "
                      f"{100 - 100 * sc.ge16:.1f}% | {100 * sc.excess:.1f}% | {secs:.3f} |")


if __name__ == "__main__":
    main()
