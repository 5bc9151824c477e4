"""Try detector settings on annotated sets: protected share, excess and time, one run.

usage: python benchmarks/tune.py SET_DIR... [--profile P] [--set KEY=VALUE ...] [--workers 2]
KEY is a Profile field (edgeguard/detect/profiles.py). Scores with the shared eval script
when it is there. For exploring settings; `edgeguard bench` is the benchmark of record.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

from edgeguard import config
from edgeguard.detect import profiles

EVAL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "eval_redaction.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--profile", default="balanced")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    prof = profiles.PROFILES[a.profile]
    kv = {}
    for item in a.set:
        k, v = item.split("=")
        kv[k] = type(getattr(prof, k))(v) if not isinstance(getattr(prof, k), str) else v
    profiles.PROFILES[a.profile] = dataclasses.replace(prof, **kv)
    cfg = config.override(config.Config(), "detect", profile=a.profile, threads=a.threads)
    from edgeguard.pipeline import Pipeline

    pipe = Pipeline(cfg)
    for s in a.sets:
        ann = json.loads((Path(s) / "annotations.json").read_text())
        files = [Path(s) / im["file"] for im in ann["images"]]
        if a.limit:
            files = files[: a.limit]
        views = [0, 0]
        lock = threading.Lock()

        def one(p: Path, views: list[int] = views, lock: threading.Lock = lock) -> str:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            dets, regions = pipe.find(rgb)
            st = pipe.detector.last_stats  # this thread's last call
            with lock:
                views[0] += st.views_planned
                views[1] += st.views_run
            return json.dumps({"path": str(p), "faces": [
                {"box": d.box.as_list(), "score": d.score, "region": r.as_list()}
                for d, r in zip(dets, regions, strict=True)]})

        t = time.perf_counter()
        with ThreadPoolExecutor(a.workers) as ex:
            lines = list(ex.map(one, files))
        dt = time.perf_counter() - t
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"== {Path(s).name}: {len(files)} img {dt:.2f}s ({dt / len(files) * 1e3:.0f} ms/img)"
              f" views/img planned {views[0] / len(files):.1f} run {views[1] / len(files):.1f}"
              f" {kv}")
        if EVAL.is_file():
            annp = Path(s) / "annotations.json"
            if a.limit:
                sub = dict(ann, images=ann["images"][: a.limit])
                annp = Path(fh.name + ".ann.json")
                annp.write_text(json.dumps(sub))
                # eval resolves nothing relative; it uses basenames only
            subprocess.run([sys.executable, str(EVAL), str(annp), fh.name], check=False)


if __name__ == "__main__":
    main()
