"""Camera loop and still timings on this machine (docs/camera.md quotes the results).

    .venv/bin/python benchmarks/camera.py [--frames 60] [--json]

1. The frame loop from a `file:` source (unpaced: as fast as it goes) of real faces moving
   across a 1280x720 frame, for several lores sizes and both lores searches, with video
   segments on (MPEG-4): frames per second, detection ms per frame, whole-frame ms.
2. One 12 MP still (4032x3024): the full multi-scale search on the main frame, redaction
   and JPEG encoding, which is what the still worker does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.camera import moving_faces

from edgeguard import codec, config
from edgeguard.camera.loop import CameraService, World
from edgeguard.pipeline import Pipeline
from edgeguard.redact import redact


def loop_run(pipe: Pipeline, frames_dir: Path, lores: tuple[int, int], search: str,
             video: bool) -> dict[str, float]:
    cfg = config.from_dict({"camera": {
        "source": f"file:{frames_dir}", "fps": 15.0, "video": video, "lores_size": list(lores),
        "lores_search": search, "max_frame_age_s": 60.0, "main_size": [1280, 720],
        "search": "lores", "delay_frames": 0}})  # the lores search alone (camera_truth.py
    # measures the main-resolution search, the default, with ground truth)
    with tempfile.TemporaryDirectory() as out:
        svc = CameraService(cfg, pipe, Path(out), world=World(paced=False))
        t0 = time.perf_counter()
        svc.start()
        svc.join()
        wall = time.perf_counter() - t0
        svc.stop()
        st = svc.status()
    return {"fps": round(st["frames"] / wall, 1), "detect_ms": st["detect_ms"],
            "detect_ms_p95": st["detect_ms_p95"], "frame_ms": st["frame_ms"],
            "faces_per_frame": round(st["faces"] / max(1, st["frames"]), 2)}


def still_run(pipe: Pipeline, astronaut: np.ndarray, repeats: int) -> dict[str, float]:
    scene = moving_faces(astronaut, n=1, size=(4032, 3024), head_px=400)
    raw = scene.frames[0]
    rc = pipe.cfg.redact
    times: dict[str, list[float]] = {"search": [], "redact": [], "encode": [], "total": []}
    for _ in range(repeats):
        rgb = raw.copy()
        t0 = time.perf_counter()
        _, regions = pipe.find(rgb)
        t1 = time.perf_counter()
        redact(rgb, regions, mode=rc.mode, shape=rc.shape, color=rc.color, outline=rc.outline)
        t2 = time.perf_counter()
        codec.encode(rgb, "jpeg", quality=90)
        t3 = time.perf_counter()
        for k, v in (("search", t1 - t0), ("redact", t2 - t1), ("encode", t3 - t2),
                     ("total", t3 - t0)):
            times[k].append(v * 1e3)
    out = {f"{k}_ms": round(statistics.median(v), 0) for k, v in times.items()}
    out["views"] = pipe.detector.last_stats.views_run
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut())
    pipe = Pipeline(config.Config())
    results: dict[str, object] = {"threads": pipe.cfg.detect.threads,
                                  "runtime": pipe.runtime_name,
                                  "opencv": cv2.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        scene = moving_faces(astronaut, n=args.frames, fps=15.0,
                             tracks=((40, 60, 18, 4), (1100, 520, -18, -4)))
        frames_dir = scene.write(Path(tmp) / "frames")
        loop_run(pipe, frames_dir, (384, 216), "whole", False)  # warm-up
        runs = {}
        for lores in ((320, 240), (384, 216)):
            for search in ("full", "whole"):
                for video in (True, False):
                    key = f"lores {lores[0]}x{lores[1]} {search}{' +video' if video else ''}"
                    runs[key] = loop_run(pipe, frames_dir, lores, search, video)
                    if not args.json:
                        print(f"{key:32s} {runs[key]}", flush=True)
        results["loop_1280x720"] = runs
    results["still_12mp"] = still_run(pipe, astronaut, 3)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("12 MP still:", results["still_12mp"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
