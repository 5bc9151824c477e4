"""Video benchmark: EdgeGuard's video path against deface's video mode, same files, same run.

    .venv/bin/python benchmarks/video.py [--data DIR] [--clips N] [--frames N] [--out DIR]

Clips are built from annotated photos (default: the shared mosaic_caltech_1080p set, 1920x1080
canvases of real photos with human face boxes): each clip is one photo that slowly zooms
(0.8x to 1.15x) and pans, so every face moves and changes size (16-250 px), with its boxes
known in every frame; H.264 at 15 fps with a 440 Hz AAC tone. Both tools redact with a
solid black fill (EdgeGuard ``--mode solid``, deface ``--replacewith solid``; default
shapes and 1.3x regions for both), so coverage is read from the pixels: a face-frame is
*protected* when at least 70% of its box's pixels that were not already dark come out
dark (the same 70% rule as the photo scorer), else *leaked*. Faces under 16 px or less
than 70% inside the frame are not scored.

Each tool runs as its own process (``edgeguard blur``, ``deface``), free to use every
core; wall time and peak RSS (``wait4``) are measured per process, model loading
included. deface comes from benchmarks/peers.sh (.venv-deface).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parents[1]
DEFAULT_DATA = HERE.parent.parent / "shared/data/faces/mosaic_caltech_1080p"
FPS = 15
RATE = 48_000
MIN_PX = 16
COVER = 0.7
DARK = 40  # grey level under which a pixel counts as filled (and, in the raw, as dark)
BUCKETS = ((16, 40), (40, 10**9))


@dataclass
class Clip:
    path: Path
    boxes: list[list[tuple[float, float, float, float]]]  # per frame


def _warp(n: int, frames: int, w: int, h: int) -> np.ndarray:
    """The affine map of frame n: zoom 0.8 -> 1.15 about the centre, pan on an ellipse."""
    t = n / max(1, frames - 1)
    s = 0.8 + 0.35 * t
    dx = 60 * np.sin(2 * np.pi * t)
    dy = 30 * np.cos(2 * np.pi * t)
    cx, cy = w / 2, h / 2
    return np.array([[s, 0, cx - s * cx + dx], [0, s, cy - s * cy + dy]], np.float64)


def build_clip(image: Path, faces: list[list[float]], out: Path, frames: int) -> Clip:
    import av

    rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    per_frame: list[list[tuple[float, float, float, float]]] = []
    with av.open(str(out), mode="w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.options = {"crf": "18", "preset": "veryfast"}
        a = c.add_stream("aac", rate=RATE)
        a.layout, a.format = "mono", "fltp"
        for n in range(frames):
            m = _warp(n, frames, w, h)
            frame = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
            boxes = []
            for x1, y1, x2, y2 in faces:
                s, tx, ty = m[0, 0], m[0, 2], m[1, 2]
                boxes.append((x1 * s + tx, y1 * s + ty, x2 * s + tx, y2 * s + ty))
            per_frame.append(boxes)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = n, Fraction(1, FPS)
            for pkt in v.encode(vf):
                c.mux(pkt)
        for pkt in v.encode(None):
            c.mux(pkt)
        samples = int(RATE * frames / FPS)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / RATE)).astype(np.float32)
        for start in range(0, samples - 1024 + 1, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = RATE, start, Fraction(1, RATE)
            for pkt in a.encode(af):
                c.mux(pkt)
        for pkt in a.encode(None):
            c.mux(pkt)
    return Clip(out, per_frame)


def _hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


def run_tool(cmd: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one process.

    The peak is the process's own VmHWM, polled until it exits: ``wait4``'s ru_maxrss would
    include this (large) benchmark process, which Linux carries over from fork across exec.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0.0
    while proc.poll() is None:
        # Only once the child runs the tool (not this process's image before its exec).
        with contextlib.suppress(OSError):
            if cmd[0].encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
                peak = max(peak, _hwm_mb(proc.pid) or 0.0)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{out[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak}


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray") for f in c.decode(video=0)]


def _audio(path: Path) -> list[bytes]:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def score(clip: Clip, output: Path) -> dict[str, object]:
    raw, out = _frames(clip.path), _frames(output)
    tot = [0] * len(BUCKETS)
    leaked = [0] * len(BUCKETS)
    for n in range(min(len(raw), len(out))):
        r, o = raw[n], out[n]
        h, w = r.shape
        for x1, y1, x2, y2 in clip.boxes[n]:
            cx1, cy1 = max(0, round(x1)), max(0, round(y1))
            cx2, cy2 = min(w, round(x2)), min(h, round(y2))
            area = (x2 - x1) * (y2 - y1)
            if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < COVER * area:
                continue
            size = y2 - y1
            if size < MIN_PX:
                continue
            b = next(i for i, (lo, hi) in enumerate(BUCKETS) if lo <= size < hi)
            rr, oo = r[cy1:cy2, cx1:cx2], o[cy1:cy2, cx1:cx2]
            lit = rr >= DARK
            if lit.sum() == 0:
                continue
            tot[b] += 1
            if (oo[lit] < DARK).mean() < COVER:
                leaked[b] += 1
    return {"frames_in": len(raw), "frames_out": len(out), "face_frames": tot,
            "leaked": leaked}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--out", type=Path, default=HERE / "bench-out/video")
    ap.add_argument("--deface", type=Path, default=HERE / ".venv-deface/bin/deface")
    ap.add_argument("--edgeguard", type=Path, default=Path(sys.executable).parent / "edgeguard")
    ap.add_argument("--tools", default="edgeguard,deface",
                    help="comma-separated: edgeguard, deface (default both)")
    args = ap.parse_args(argv)
    ann = json.loads((args.data / "annotations.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, im in enumerate(ann["images"][: args.clips]):
        path = args.out / f"clip{i}.mp4"
        clips.append(build_clip(args.data / im["file"], im["faces"], path, args.frames))
    tools = {
        "edgeguard": lambda c, o: [str(args.edgeguard), "blur", str(c.path), "-o", str(o),
                                   "--mode", "solid"],
        "deface": lambda c, o: [str(args.deface), str(c.path), "-o", str(o / c.path.name),
                                "--replacewith", "solid", "--keep-audio"],
    }
    report: dict[str, dict[str, object]] = {}
    for name, cmd in tools.items():
        if name not in args.tools.split(","):
            continue
        folder = args.out / name
        shutil.rmtree(folder, ignore_errors=True)  # `blur` never overwrites: start empty
        folder.mkdir()
        wall = 0.0
        rss = 0.0
        tot = [0] * len(BUCKETS)
        leaked = [0] * len(BUCKETS)
        frames_ok = True
        audio_same = True
        for c in clips:
            m = run_tool(cmd(c, folder))
            wall += m["wall_s"]
            rss = max(rss, m["peak_rss_mb"])
            s = score(c, folder / c.path.name)
            frames_ok &= s["frames_in"] == s["frames_out"]
            audio_same &= _audio(c.path) == _audio(folder / c.path.name)
            for b in range(len(BUCKETS)):
                tot[b] += s["face_frames"][b]  # type: ignore[index]
                leaked[b] += s["leaked"][b]  # type: ignore[index]
        frames = args.frames * len(clips)
        report[name] = {"face_frames": dict(zip(["16-40", ">=40"], tot, strict=True)),
                        "leaked": dict(zip(["16-40", ">=40"], leaked, strict=True)),
                        "fps": round(frames / wall, 2), "wall_s": round(wall, 1),
                        "peak_rss_mb": round(rss, 1), "same_frame_count": frames_ok,
                        "audio_packets_identical": audio_same}
        print(name, json.dumps(report[name]), flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    if {"edgeguard", "deface"} <= set(report):
        e, d = report["edgeguard"], report["deface"]
        ratio = float(d["fps"]) / float(e["fps"])  # type: ignore[arg-type]
        print(f"time ratio edgeguard/deface: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
