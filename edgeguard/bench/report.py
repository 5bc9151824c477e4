"""Write a benchmark report: a Markdown table per set, JSON, and a plot by face size.

matplotlib is a bench-only extra (``pip install edgeguard[bench]``); it is imported only
when the plot is drawn, with the Agg backend, and its absence costs the plot, not the run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from edgeguard.bench.runners import RunKind, Status
from edgeguard.bench.score import BUCKET_LABELS
from edgeguard.bench.suite import BenchReport, Row, SetReport

if TYPE_CHECKING:
    from matplotlib.artist import Artist

logger = logging.getLogger(__name__)

COLUMNS = (
    "tool", "leak >=16", "leak >=32", "excess", "strays/img",
    *(f"{b} px" for b in BUCKET_LABELS), "all", "err", "s/img", "CPU s/img", "x deface",
    "x floor", "peak RSS MB",
)
SUMMARY_COLUMNS = ("set", "tool", "leak >=16", "leak >=32", "excess", "strays/img",
                   "s/img", "x deface")

EXPLAIN = """\
*leak*: the share of annotated faces (>= 16 px, >= 32 px tall) left unprotected, what a user
loses; a face is *protected* when >=70% of its box lies inside the redaction regions (the
px columns: protected share by face height); *excess*: redacted area outside every
annotated (or ignored) face, share of the image; *strays/img*: regions less than 10% on a
face, per image; *err*: images without a result.
*s/img*: processing seconds per image, start-up and model loading excluded (peers and the
floor: their own loop timer; EdgeGuard: wall time less a one-image run's start-up);
*CPU s/img*: the child's user + system CPU time per image, start-up included (less
sensitive than s/img to other work on a shared machine); *x deface*, *x floor*: s/img over
deface's and over the codec floor's (decode + JPEG q90 encode of the same files, one
process) in this run; *blur* rows time the full file pipeline (decode, detect, redact,
encode, write). *peak RSS*: the child process's maximum resident set. Tools ran one after
another, each free to use every core."""


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or math.isnan(v) else f"{v * 100:.{digits}f}%"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _cells(r: Row) -> list[str]:
    m, s = r.m, r.score
    if s is not None:
        prot = [_pct(1 - s.ge16), _pct(1 - s.ge32), _pct(s.excess), f"{s.fp_per_image:.2f}"]
        prot += [_pct(v) for v in s.by_bucket]
        prot += [_pct(s.all), str(s.missing)]
    else:
        prot = ["-"] * (len(BUCKET_LABELS) + 6)
    label = m.tool
    if m.status is not Status.OK:
        label += f" ({m.status})"
    cpu = m.cpu_s / m.images if m.cpu_s is not None and m.images else None
    return [label, *prot, _num(m.s_per_image, ".3f"), _num(cpu, ".3f"), _num(r.x_deface, ".2f"),
            _num(r.x_floor, ".1f"), _num(m.peak_rss_mb, ".0f")]


def set_table(s: SetReport) -> str:
    head = (f"### {s.name}: {s.images} of {s.images_in_set} images, {s.faces} faces, "
            f"{s.size}")
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in s.rows]
    faces = next((r.score.total for r in s.rows if r.score is not None), None)
    if faces is not None:
        counts = [str(sum(faces[1:])), str(sum(faces[2:])), "", ""]
        counts += [str(n) for n in faces] + [str(sum(faces))]
        lines.append("| faces | " + " | ".join(counts) + " |"
                     + " |" * (len(COLUMNS) - 1 - len(counts)))
    notes = [f"{r.m.tool}: {r.m.note}" for r in s.rows if r.m.note]
    notes += [f"{r.m.tool}: eval_redaction.py {r.check}" for r in s.rows
              if r.check and r.check != "agrees"]
    checked = [r for r in s.rows if r.check == "agrees"]
    if checked:
        notes.append(f"eval_redaction.py agrees on 'all' and 'excess' for {len(checked)} "
                     "result files")
    notes += list(s.notes)
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def summary_table(rep: BenchReport) -> str:
    """What users lose, every set and tool in one table: leak rates, excess, strays, time."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(SUMMARY_COLUMNS) - 2)) + "|"]
    for s in rep.sets:
        for r in s.rows:
            if r.score is None:
                continue
            sc = r.score
            lines.append("| " + " | ".join([
                s.name, r.m.tool, _pct(1 - sc.ge16), _pct(1 - sc.ge32), _pct(sc.excess),
                f"{sc.fp_per_image:.1f}", _num(r.m.s_per_image, ".3f"),
                _num(r.x_deface, ".2f")]) + " |")
    return "\n".join(lines) + "\n"


def markdown(rep: BenchReport) -> str:
    meta = rep.meta
    mach = meta.get("machine", {})
    out = ["# EdgeGuard benchmark", ""]
    if meta:
        out.append(f"Run {meta.get('started', '?')} on {mach.get('cpus', '?')} x "
                   f"{mach.get('cpu') or mach.get('machine', '?')}, Python "
                   f"{mach.get('python', '?')}; took {meta.get('duration_s', 0):.0f} s; load "
                   f"average before {_load(meta.get('loadavg_before'))}, after "
                   f"{_load(meta.get('loadavg_after'))}.")
        if meta.get("command"):
            out.append(f"Command: `{meta['command']}`")
        out.append("")
    out += [EXPLAIN, "", "## Summary", "", summary_table(rep), "## Sets", ""]
    for s in rep.sets:
        out.append(set_table(s))
    return "\n".join(out)


def _load(v: object) -> str:
    return "/".join(f"{x:.1f}" for x in v) if isinstance(v, list) else "?"


def write_json(rep: BenchReport, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rep.to_dict(), fh, indent=1)
        fh.write("\n")


def plot(rep: BenchReport, path: Path) -> bool:
    """Unprotected share (the leak rate) by face-size bucket, one panel per set, one line
    per tool.

    Returns False (and logs why) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'edgeguard[bench]'): no plot")
        return False
    sets = [s for s in rep.sets if any(r.score is not None for r in s.rows)]
    if not sets:
        return False
    ncols = min(3, len(sets))
    nrows = math.ceil(len(sets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False,
                             sharey=True)
    x = list(range(len(BUCKET_LABELS)))
    styles = {RunKind.DETECT: "-", RunKind.PEER: "--"}
    # One colour per tool across every panel, and one legend for the figure.
    tools = list(dict.fromkeys(r.m.tool for s in sets for r in s.rows if r.score is not None))
    handles: dict[str, Artist] = {}
    for ax, s in zip(axes.flat, sets, strict=False):
        for r in s.rows:
            if r.score is None:
                continue
            y = [100 - v * 100 for v in r.score.by_bucket]
            (line,) = ax.plot(x, y, styles.get(r.m.kind, ":"), marker="o", markersize=3,
                              color=f"C{tools.index(r.m.tool) % 10}", label=r.m.tool)
            handles.setdefault(r.m.tool, line)
        faces = next(r.score.total for r in s.rows if r.score is not None)
        ax.set_xticks(x, [f"{b}\n({n})" for b, n in zip(BUCKET_LABELS, faces, strict=True)],
                      fontsize=7)
        ax.set_title(f"{s.name} ({s.images} img)", fontsize=9)
        ax.set_yscale("symlog", linthresh=1.0)  # 0-1% linear, then log: small leaks show
        ax.set_ylim(0, 110)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sets):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("faces left unprotected, %")
    for ax in axes[-1, :]:
        ax.set_xlabel("face height, px (faces)")
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(4, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(handles) / 4) / nrows, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(rep: BenchReport, out: Path) -> tuple[Path, Path, Path | None]:
    """bench.md, bench.json and leak_by_size.png (None when not drawn) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "bench.md", out / "bench.json", out / "leak_by_size.png"
    md.write_text(markdown(rep), encoding="utf-8")
    write_json(rep, js)
    return md, js, (png if plot(rep, png) else None)
