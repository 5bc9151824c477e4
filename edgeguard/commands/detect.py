"""`edgeguard detect INPUT...`: faces and redaction regions, one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edgeguard.cli import command
from edgeguard.commands.common import add_config_flags, expand_inputs, load_config
from edgeguard.errors import EdgeGuardError
from edgeguard.pipeline import Pipeline


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    # Scripts and the shared evaluation tools call `edgeguard detect --json`.
    p.add_argument("--json", action="store_true",
                   help="accepted for compatibility; the output is always JSON lines")
    add_config_flags(p, redaction=False)
    # Without blur's --mode, argparse would take `--mode` as short for --models-dir.
    p.allow_abbrev = False


def _r(v: float) -> float:
    return round(v, 2)


@command("detect", "find faces; print boxes, scores and redaction regions as JSON lines")(_add)
def _detect(args: argparse.Namespace) -> int:
    pipe = Pipeline(load_config(args), at_start_up=True)
    failures = 0
    for src, _ in expand_inputs(args.inputs):
        t0 = time.perf_counter()
        try:
            found = pipe.detect_file(src)
        except EdgeGuardError as exc:
            failures += 1
            print(json.dumps({"path": str(src), "error": str(exc)}), flush=True)
            print(f"{src}: {exc}", file=sys.stderr)
            continue
        ms = (time.perf_counter() - t0) * 1e3
        faces = [
            {"box": [_r(v) for v in d.box.as_list()], "score": round(d.score, 4),
             "weak": d.weak, "region": r.as_list()}
            for d, r in zip(found.detections, found.regions, strict=True)
        ]
        print(json.dumps({"path": str(src), "width": found.width, "height": found.height,
                          "faces": faces, "ms": round(ms, 1)}), flush=True)
    return 1 if failures else 0
