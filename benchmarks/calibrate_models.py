"""Measure each BlazeFace model's detection rate by face size in model-input pixels.

For annotated faces of a set (faces larger than the target, so every test is a real
downscale), the photo is resized so the face is T input pixels tall, a model-input-sized
window containing the whole face at a random position is cut out, and the model is run.
A face counts as found when a detection's box, expanded 1.3x as the redactor does, covers
70% of it (the eval's rule). Output: rate per (model, T, score threshold).

usage: python benchmarks/calibrate_models.py SET_DIR [SET_DIR...] [--faces N]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import cv2
import numpy as np

from edgeguard import models
from edgeguard.detect import blazeface as bf
from edgeguard.detect.runtime import ModelRunner

SIZES = [8, 10, 12, 14, 16, 20, 24, 32, 48, 64, 96]
THRESH = [0.1, 0.2, 0.3, 0.5]


def covered(face, boxes, expand=1.3):
    fx1, fy1, fx2, fy2 = face
    area = (fx2 - fx1) * (fy2 - fy1)
    mask_best = 0.0
    for b in boxes:
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        w, h = (b[2] - b[0]) * expand, (b[3] - b[1]) * expand
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        iw = max(0, min(x2, fx2) - max(x1, fx1))
        ih = max(0, min(y2, fy2) - max(y1, fy1))
        mask_best = max(mask_best, iw * ih / area)
    return mask_best >= 0.7


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--faces", type=int, default=150)
    ap.add_argument("--models", default="short,full,back")
    a = ap.parse_args()
    rng = random.Random(1)
    man = models.load_manifest()
    mdir = models.default_models_dir()
    runners = {n: ModelRunner(mdir / man.models[n].file, man.models[n].input_size,
                              man.models[n].num_boxes, threads=1) for n in a.models.split(",")}
    anchors = {n: bf.generate_anchors(man.models[n].anchors) for n in runners}
    faces = []
    for s in a.sets:
        ann = json.loads((Path(s) / "annotations.json").read_text())
        for im in ann["images"]:
            for f in im["faces"]:
                if f[3] - f[1] >= 40:
                    faces.append((Path(s) / im["file"], f))
    rng.shuffle(faces)
    faces = faces[: a.faces]
    hits = {(n, t, th): 0 for n in runners for t in SIZES for th in THRESH}
    per = {}
    cache = {}
    for path, f in faces:
        img = cache.get(path)
        if img is None:
            img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            cache.clear()
            cache[path] = img
        fh = f[3] - f[1]
        for t in SIZES:
            sc = t / fh
            small = cv2.resize(img, None, fx=sc, fy=sc, interpolation=cv2.INTER_AREA)
            face = [v * sc for v in f]
            for n, r in runners.items():
                S = r.input_size
                fw = face[2] - face[0]
                if fw > S or t > S:
                    continue
                ox = face[0] - rng.uniform(0, max(0, S - fw))
                oy = face[1] - rng.uniform(0, max(0, S - t))
                ox, oy = int(ox), int(oy)
                view = np.zeros((S, S, 3), np.uint8)
                H, W = small.shape[:2]
                x1, y1, x2, y2 = max(0, ox), max(0, oy), min(W, ox + S), min(H, oy + S)
                view[y1 - oy:y2 - oy, x1 - ox:x2 - ox] = small[y1:y2, x1:x2]
                rb, rs = r(view)
                boxes, scores = bf.candidates(rb, rs, anchors[n], S, min(THRESH))
                rel = [face[0] - ox, face[1] - oy, face[2] - ox, face[3] - oy]
                for th in THRESH:
                    sel = boxes[scores >= th]
                    if sel.shape[0]:
                        kb, _ = bf.weighted_nms(sel, scores[scores >= th], 0.3)
                        if covered(rel, kb[:, :4] * S):
                            hits[(n, t, th)] += 1
                            per.setdefault((n, t, th), set()).add(id(f))
    print(f"{len(faces)} faces")
    for n in runners:
        for th in THRESH:
            rates = (hits[(n, t, th)] / len(faces) * 100 for t in SIZES)
            print(f"{n:5} th={th}: " + " ".join(f"{t}:{r:4.0f}" for t, r in zip(SIZES, rates,
                                                                              strict=True)))
    names = list(runners)
    for th in THRESH:
        for i, n1 in enumerate(names):
            for n2 in names[i + 1:]:
                both = (len(per.get((n1, t, th), set()) | per.get((n2, t, th), set()))
                        / len(faces) * 100 for t in SIZES)
                print(f"{n1}+{n2} th={th}: " + " ".join(
                    f"{t}:{r:4.0f}" for t, r in zip(SIZES, both, strict=True)))


if __name__ == "__main__":
    main()
