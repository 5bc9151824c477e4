"""The benchmark run: every set, every tool, one after another; scored and compared.

Per set, in this order: the codec floor, the peers, ``edgeguard detect`` per profile and,
on 12 MP sets, ``edgeguard blur`` per profile. Each result file is scored by
:mod:`edgeguard.bench.score`; when the shared scorer (``eval_redaction.py``) is present it
scores the same files and its ``all`` and ``excess`` columns are checked against ours.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from edgeguard.bench.runners import PEERS, BenchRunner, Measurement, RunKind, Status
from edgeguard.bench.score import SetScore, load_results, score_set
from edgeguard.bench.sets import AnnotatedSet, same_basenames, sample_size

logger = logging.getLogger(__name__)

EVAL_SCRIPT = "eval_redaction.py"
# The shared scorer prints one decimal for 'all' and two for 'excess' (both in percent).
ALL_TOLERANCE = 0.051
EXCESS_TOLERANCE = 0.0051
# A load average above this many times the CPU count means something else was running
# (a child of ours accounts for at most about one per core).
BUSY_LOAD = 1.5


@dataclass(frozen=True)
class Options:
    profiles: tuple[str, ...] = ("balanced",)
    peers: tuple[str, ...] = ("deface", "seed")
    quick: bool = False
    limit: int | None = None
    blur: bool = True  # time `edgeguard blur` on the 12 MP sets
    check: bool = True  # cross-check scores with the shared eval_redaction.py


@dataclass(frozen=True)
class Row:
    m: Measurement
    score: SetScore | None = None
    x_deface: float | None = None  # s/img over deface's s/img in this run
    x_floor: float | None = None  # s/img over the codec floor's s/img in this run
    check: str = ""  # outcome of the cross-check with eval_redaction.py

    def to_dict(self) -> dict[str, Any]:
        m = self.m
        ms = sorted(m.per_image_ms)
        return {
            "tool": m.tool, "kind": str(m.kind), "profile": m.profile, "status": str(m.status),
            "note": m.note, "images": m.images,
            "result": str(m.result_path) if m.result_path else None,
            "wall_s": m.wall_s, "seconds": m.seconds, "startup_s": m.startup_s,
            "s_per_image": m.s_per_image, "peak_rss_mb": m.peak_rss_mb, "cpu_s": m.cpu_s,
            "per_image_ms": ({"median": ms[len(ms) // 2], "p90": ms[int(len(ms) * 0.9)],
                              "max": ms[-1]} if ms else None),
            "x_deface": self.x_deface, "x_floor": self.x_floor,
            "score": self.score.to_dict() if self.score else None,
            "eval_check": self.check or None, **({"extra": m.extra} if m.extra else {}),
        }


@dataclass(frozen=True)
class SetReport:
    name: str
    path: Path
    images: int  # measured (sampled) images
    images_in_set: int
    faces: int
    size: str  # e.g. "4000x3000" (median image)
    large: bool
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "images": self.images,
                "images_in_set": self.images_in_set, "faces": self.faces, "size": self.size,
                "large": self.large, "notes": list(self.notes),
                "rows": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True)
class BenchReport:
    sets: tuple[SetReport, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "sets": [s.to_dict() for s in self.sets]}


def machine_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
    except OSError:
        pass
    # x86: "model name"; Raspberry Pi: "Model" (the board); other ARM: "Hardware".
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or ""
    return {"cpus": os.cpu_count(), "cpu": model, "machine": platform.machine(),
            "system": platform.platform(), "python": platform.python_version()}


def _median_size(s: AnnotatedSet) -> str:
    sizes = sorted((int(im["width"]) * int(im["height"]), f"{im['width']}x{im['height']}")
                   for im in s.images)
    return sizes[len(sizes) // 2][1] if sizes else "-"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def parse_eval_output(text: str) -> list[tuple[float, float]]:
    """(all %, excess %) per result row from eval_redaction.py's printed table."""
    rows: list[tuple[float, float]] = []
    for line in text.splitlines()[1:]:
        pct = re.findall(r"(-?[\d.]+|nan)%", line[22:])
        if len(pct) >= 9:  # 5 buckets, >=16, >=32, all, excess
            rows.append((float(pct[7]), float(pct[8])))
    return rows


def cross_check(eval_script: Path, annotations: Path, rows: Sequence[Row],
                python: str = sys.executable) -> list[Row]:
    """Score the rows' result files with the shared scorer and note whether it agrees."""
    scored = [r for r in rows if r.score is not None and r.m.result_path is not None]
    if not scored:
        return list(rows)
    argv = [python, str(eval_script), str(annotations),
            *(str(r.m.result_path) for r in scored)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    theirs = parse_eval_output(proc.stdout) if proc.returncode == 0 else []
    verdict: dict[int, str] = {}
    if len(theirs) != len(scored):
        why = proc.stderr.strip().splitlines()[-1:] or ["unexpected output"]
        logger.warning("eval_redaction.py could not be compared: %s", why[0])
        for r in scored:
            verdict[id(r)] = f"not compared: {why[0][:120]}"
    else:
        for r, (t_all, t_exc) in zip(scored, theirs, strict=True):
            assert r.score is not None
            ours_all, ours_exc = r.score.all * 100, r.score.excess * 100
            if abs(ours_all - t_all) <= ALL_TOLERANCE and abs(ours_exc - t_exc) <= EXCESS_TOLERANCE:
                verdict[id(r)] = "agrees"
            else:
                verdict[id(r)] = (f"DIFFERS: all {ours_all:.1f}% vs {t_all:.1f}%, "
                                  f"excess {ours_exc:.2f}% vs {t_exc:.2f}%")
                logger.warning("%s: eval_redaction.py disagrees with our score (%s)",
                               r.m.tool, verdict[id(r)])
    return [Row(r.m, r.score, r.x_deface, r.x_floor, verdict.get(id(r), r.check))
            for r in rows]


def _score(m: Measurement, s: AnnotatedSet) -> SetScore | None:
    if m.status is not Status.OK or m.result_path is None:
        return None
    try:
        return score_set(s.images, load_results(m.result_path))
    except (OSError, ValueError) as exc:
        logger.warning("%s: result %s cannot be scored: %s", m.tool, m.result_path, exc)
        return None


def run_set(s: AnnotatedSet, opts: Options, runner: BenchRunner, workdir: Path,
            eval_script: Path | None) -> SetReport:
    """Measure every tool on ``s`` (already sampled), one after another."""
    workdir.mkdir(parents=True, exist_ok=True)
    ann_path = workdir / "annotations.json"
    with open(ann_path, "w", encoding="utf-8") as fh:
        json.dump(s.annotations(), fh)
    files = list(s.paths)
    notes: list[str] = []
    dup = same_basenames(s)
    if dup:
        notes.append(f"{len(dup)} file names occur twice; results are keyed by file name")
    steps: list[Callable[[], Measurement]] = [partial(runner.floor, files, workdir)]
    steps += [partial(runner.peer, PEERS[name], files, workdir) for name in opts.peers]
    steps += [partial(runner.detect, files, p, workdir) for p in opts.profiles]
    if opts.blur and s.large:
        steps += [partial(runner.blur, files, p, workdir) for p in opts.profiles]
    measured: list[Measurement] = []
    for step in steps:
        # The 1-minute load average before each run, to tell a disturbed timing afterwards
        # (it also carries the previous child's load for a while).
        load = os.getloadavg()[0]
        m = step()
        measured.append(replace(m, extra={**m.extra, "load1_before": round(load, 2)}))
    cpus = os.cpu_count() or 1
    peak_load = max(m.extra["load1_before"] for m in measured)
    if peak_load > BUSY_LOAD * cpus:
        notes.append(f"the 1-minute load average reached {peak_load:.1f} before a run on this "
                     f"{cpus}-CPU machine: other work shared it, timings are disturbed")

    floor = next((m for m in measured if m.kind is RunKind.FLOOR and m.status is Status.OK), None)
    deface = next((m for m in measured if m.kind is RunKind.PEER and m.tool == PEERS["deface"].label
                   and m.status is Status.OK), None)
    rows = []
    for m in measured:
        rows.append(Row(m, _score(m, s),
                        x_deface=_ratio(m.s_per_image, deface.s_per_image if deface else None),
                        x_floor=_ratio(m.s_per_image, floor.s_per_image if floor else None)))
    if eval_script is not None and eval_script.is_file():
        rows = cross_check(eval_script, ann_path, rows, python=runner.python)
    elif eval_script is not None:
        notes.append(f"{eval_script} absent: scores not cross-checked")
    # Report EdgeGuard first, then the peers, then the floor.
    order = {RunKind.DETECT: 0, RunKind.BLUR: 1, RunKind.PEER: 2, RunKind.FLOOR: 3}
    rows.sort(key=lambda r: order[r.m.kind])
    return SetReport(name=s.name, path=s.root, images=len(s.images), images_in_set=-1,
                     faces=s.faces, size=_median_size(s), large=s.large, rows=tuple(rows),
                     notes=tuple(notes))


def _unique_names(sets: Sequence[AnnotatedSet]) -> list[str]:
    names: list[str] = []
    for s in sets:
        n, i = s.name, 2
        while n in names:
            n, i = f"{s.name}-{i}", i + 1
        names.append(n)
    return names


def run_bench(sets: Sequence[AnnotatedSet], opts: Options, runner: BenchRunner, out: Path, *,
              eval_script: Path | None, command: str | None = None,
              clock: Callable[[], float] = time.time) -> BenchReport:
    """Run the whole benchmark; result files go under ``out/<set>/``."""
    out.mkdir(parents=True, exist_ok=True)
    started = clock()
    load0 = os.getloadavg()
    reports = []
    for s, name in zip(sets, _unique_names(sets), strict=True):
        n = sample_size(s, quick=opts.quick, limit=opts.limit)
        sample = s.sample(n)
        logger.info("set %s: %d of %d images", name, len(sample.images), len(s.images))
        rep = run_set(sample, opts, runner, out / name, eval_script)
        reports.append(SetReport(name=name, path=rep.path, images=rep.images,
                                 images_in_set=len(s.images), faces=rep.faces, size=rep.size,
                                 large=rep.large, rows=rep.rows, notes=rep.notes))
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "duration_s": clock() - started,
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_info(),
        "options": {"profiles": list(opts.profiles), "peers": list(opts.peers),
                    "quick": opts.quick, "limit": opts.limit, "blur": opts.blur,
                    "config": str(runner.config) if runner.config else None},
        "command": command,
    }
    return BenchReport(sets=tuple(reports), meta=meta)
