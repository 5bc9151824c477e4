"""Ground-truth camera benchmark: how many face-frames the camera's video leaks, by face size.

    .venv/bin/python benchmarks/camera_truth.py [--modes blur,pixelate,solid]
        [--data /work/shared/data/faces] [--seconds 10] [--json] [--camera KEY=VALUE ...]

1. Builds 1280x720, 15 fps Motion-JPEG videos from the annotated dev photos
   (``caltech_webfaces``: single-face photos, cut as head-and-shoulders cards and scaled so
   the annotated face box is 16-90 px tall) moving slowly on a brick wall in lanes, some
   standing still, some crossing the frame (entering and leaving), some popping in and out
   (a person stepping out from behind something).
2. Plays each video through a ``file:`` camera source of the real daemon (``python -m
   edgeguard run``, tmpfs inbox, video on, Motion JPEG so each written frame is one JPEG),
   paced like a live camera, once per redaction mode.
3. Scores every written frame against its input, per annotated face: a face-frame leaks
   when less than 70 % of its box is redacted. "Redacted" is measured on the pixels that
   carry detail (those differing from a blur of the input by more than ``DETAIL``): a
   pixel is redacted when the written value differs from the input by more than ``NOISE``
   (JPEG noise is ~2-4 levels). Flat skin looks the same blurred or not, so it is left out
   of the count rather than called a leak; a detail pixel whose detail is gone (less than
   half of the input's difference from its blur) counts as redacted too (a pixelate cell
   keeps the local mean of a cheek, not its features). The same rule is checked first on
   oracles built from the input (the face boxes redacted in the same mode: must all pass; nothing
   redacted, and the region shifted by 60 % of the face: must leak), so the metric can fail.
4. Reports leaked face-frames by face height, frames written (slots that are not a repeat
   of the previous slot) vs camera frames, the added latency (capture -> handed to the
   video writer, from the daemon's status), and the daemon's CPU seconds per camera frame
   (from /proc/PID/stat between the first frame and the end of the file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeguard.redact import redact, region_for  # noqa: E402

W, H, FPS = 1280, 720, 15.0
COVER = 0.7  # a face-frame is protected when at least this share of its box is redacted
NOISE = 7.0  # max-channel difference above JPEG noise (q95: 2-4 levels)
DETAIL = 10.0  # a pixel carries detail when it differs this much from a blur of the input
BINS = ((16, 20), (20, 28), (28, 40), (40, 60), (60, 1000))
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Card:
    rgb: np.ndarray  # the head-and-shoulders cut, already scaled
    face: tuple[float, float, float, float]  # face box inside the card


@dataclass
class Walker:
    card: Card
    x0: float
    y0: float
    vx: float  # pixels per frame
    vy: float
    first: int = 0  # frames in which it is on the wall
    last: int = 10**9


@dataclass
class Video:
    name: str
    path: Path
    frames: int
    truth: list[list[tuple[int, int, int, int, float]]]  # per frame: box + face height


@dataclass
class Run:
    slots: int = 0
    written: int = 0
    repeats: int = 0
    blank: int = 0
    faces: dict[str, list[int]] = field(default_factory=dict)  # bin -> [leaked, total]
    worst: list[tuple[int, float, float]] = field(default_factory=list)  # (frame, h, frac)


# ------------------------------------------------------------------------------ building


def load_cards(root: Path, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """Single-face caltech photos with faces >= 60 px: (the card image, face box in it)."""
    ann = json.loads((root / "caltech_webfaces" / "annotations.json").read_text())
    out = []
    for im in ann["images"]:
        if len(im["faces"]) != 1 or im.get("ignore"):
            continue
        x1, y1, x2, y2 = im["faces"][0]
        fw, fh = x2 - x1, y2 - y1
        if fh < 60:
            continue
        bgr = cv2.imread(str(root / "caltech_webfaces" / im["file"]))
        if bgr is None:
            continue
        cx1, cy1 = max(0, int(x1 - 0.7 * fw)), max(0, int(y1 - 0.7 * fh))
        cx2 = min(bgr.shape[1], int(x2 + 0.7 * fw))
        cy2 = min(bgr.shape[0], int(y2 + 1.0 * fh))
        card = cv2.cvtColor(bgr[cy1:cy2, cx1:cx2], cv2.COLOR_BGR2RGB)
        out.append((card, (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)))
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def scaled(card: np.ndarray, face: tuple[float, ...], height: float) -> Card:
    s = height / (face[3] - face[1])
    w, h = max(1, round(card.shape[1] * s)), max(1, round(card.shape[0] * s))
    img = cv2.resize(card, (w, h), interpolation=cv2.INTER_AREA)
    return Card(img, (face[0] * s, face[1] * s, face[2] * s, face[3] * s))


def wall() -> np.ndarray:
    from skimage import data

    brick = data.brick()
    tiled = np.tile(brick, (H // brick.shape[0] + 1, W // brick.shape[1] + 1))[:H, :W]
    tint = np.array([1.0, 0.85, 0.7], np.float32)
    return np.clip(tiled[..., None].astype(np.float32) * tint * 0.8 + 30, 0, 255).astype(np.uint8)


def layouts(seconds: float) -> dict[str, list[tuple[float, float, float, str]]]:
    """Per video, lanes top to bottom: (face px, lane top y, vx px/frame, kind).

    kind: "walk" (three cards crossing the frame, entering and leaving), "still" (one card
    standing, one popping in for a third of the video), "drift" (two cards, slow)."""
    return {
        "small": [(16, 10, 1.5, "walk"), (20, 75, -1.0, "walk"), (24, 150, 0.0, "still"),
                  (28, 240, 2.0, "walk"), (34, 335, -0.4, "drift"), (40, 450, 0.0, "still"),
                  (20, 585, 0.6, "drift")],
        "mixed": [(90, 5, 0.8, "drift"), (60, 250, -1.5, "walk"), (50, 420, 0.0, "still"),
                  (16, 570, 0.0, "still"), (24, 630, -2.5, "walk")],
    }


def build(name: str, lanes: list[tuple[float, float, float, str]], cards: Iterator[
        tuple[np.ndarray, tuple[float, ...]]], n: int, folder: Path,
          rng: np.random.Generator) -> Video:
    walkers: list[Walker] = []
    for face_px, top, vx, kind in lanes:
        if kind == "walk":
            span = abs(vx) * n
            for k in range(3):  # spaced so one enters as another leaves
                c = scaled(*next(cards), face_px)
                start = -c.rgb.shape[1] - k * span / 3 if vx > 0 else W + k * span / 3
                walkers.append(Walker(c, start, top, vx, 0.0))
        elif kind == "still":
            c = scaled(*next(cards), face_px)
            walkers.append(Walker(c, float(rng.uniform(50, 400)), top, 0.0, 0.0))
            c = scaled(*next(cards), face_px)
            walkers.append(Walker(c, float(rng.uniform(700, 1000)), top, 0.0, 0.0,
                                  first=n // 3, last=2 * n // 3))
        else:  # drift
            for x in (rng.uniform(40, 300), rng.uniform(650, 900)):
                c = scaled(*next(cards), face_px)
                walkers.append(Walker(c, float(x), top, vx, 0.25 * abs(vx)))
    bg = wall()
    path = folder / f"{name}.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (W, H))
    vw.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    truth: list[list[tuple[int, int, int, int, float]]] = []
    for i in range(n):
        img = bg.copy()
        boxes = []
        for wk in walkers:
            if not wk.first <= i < wk.last:
                continue
            x, y = round(wk.x0 + wk.vx * i), round(wk.y0 + wk.vy * i)
            ch, cw = wk.card.rgb.shape[:2]
            sx1, sy1, sx2, sy2 = max(0, x), max(0, y), min(W, x + cw), min(H, y + ch)
            if sx2 <= sx1 or sy2 <= sy1:
                continue
            img[sy1:sy2, sx1:sx2] = wk.card.rgb[sy1 - y:sy2 - y, sx1 - x:sx2 - x]
            fx1, fy1, fx2, fy2 = wk.card.face
            bx1, by1 = round(x + fx1), round(y + fy1)
            bx2, by2 = round(x + fx2), round(y + fy2)
            cx1, cy1, cx2, cy2 = max(0, bx1), max(0, by1), min(W, bx2), min(H, by2)
            # a face counts while most of it is in the frame
            if (cx2 - cx1) * (cy2 - cy1) >= 0.6 * (bx2 - bx1) * (by2 - by1):
                boxes.append((cx1, cy1, cx2, cy2, round(fy2 - fy1, 3)))
        vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        truth.append(boxes)
    vw.release()
    return Video(name, path, n, truth)


def frames_of(path: Path) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


# ------------------------------------------------------------------------------- scoring


def covered(out: np.ndarray, raw: np.ndarray, box: tuple[int, int, int, int, float]) -> float:
    """The share of the box's detail pixels the output changed (see the module docstring)."""
    x1, y1, x2, y2, fh = box
    pad = max(4, round(fh / 2))
    ox1, oy1, ox2, oy2 = max(0, x1 - pad), max(0, y1 - pad), min(W, x2 + pad), min(H, y2 + pad)
    r = raw[oy1:oy2, ox1:ox2].astype(np.float32)
    o = out[oy1:oy2, ox1:ox2].astype(np.float32)
    sigma = max(1.5, fh / 8)
    detail_in = np.abs(r - cv2.GaussianBlur(r, (0, 0), sigma)).max(axis=2)
    detail_out = np.abs(o - cv2.GaussianBlur(o, (0, 0), sigma)).max(axis=2)
    sl = (slice(y1 - oy1, y2 - oy1), slice(x1 - ox1, x2 - ox1))
    detail = (detail_in > DETAIL)[sl]
    # Redacted: the value moved past the noise, or the detail there is gone (a pixelate
    # cell or a blur over a cheek keeps the local mean but not the feature).
    changed = ((np.abs(o - r).max(axis=2) > NOISE) | (detail_out < 0.5 * detail_in))[sl]
    if detail.sum() < 0.15 * detail.size:  # a featureless box: count every pixel
        return float(changed.mean())
    return float((changed & detail).sum() / detail.sum())


def bin_of(h: float) -> str:
    for lo, hi in BINS:
        if lo <= h < hi:
            return f"{lo}-{hi - 1}" if hi < 1000 else f"{lo}+"
    return "<16"


def score(video: Video, out_frames: Iterator[np.ndarray], first: int = 0) -> Run:
    run = Run()
    prev_out: np.ndarray | None = None
    prev_in: np.ndarray | None = None
    for k, (raw, out) in enumerate(zip(frames_of(video.path), _skip(out_frames, first),
                                       strict=False)):
        run.slots += 1
        repeat = prev_out is not None and np.array_equal(out, prev_out) and \
            prev_in is not None and not np.array_equal(raw, prev_in)
        prev_out, prev_in = out, raw
        if repeat:
            run.repeats += 1
            continue
        run.written += 1
        if out.max() < 8:
            run.blank += 1
            continue
        for box in video.truth[k]:
            frac = covered(out, raw, box)
            b = run.faces.setdefault(bin_of(box[4]), [0, 0])
            b[1] += 1
            if frac < COVER:
                b[0] += 1
                run.worst.append((k, round(box[4], 1), round(frac, 2)))
    return run


def _skip(it: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    for i, f in enumerate(it):
        if i >= n:
            yield f


def oracle(video: Video, mode: str, how: str) -> Run:
    """The metric on known answers: ``exact`` (the face boxes redacted, expanded as the
    product does), ``none`` (nothing redacted), ``shifted`` (the region moved sideways by
    60 % of the face width). Every 5th frame, JPEG quality 95 like the video."""
    from edgeguard.config import Config

    rc = Config().redact

    def gen() -> Iterator[np.ndarray]:
        for k, raw in enumerate(frames_of(video.path)):
            out = raw.copy()
            if how != "none" and k % 5 == 0:
                regions = []
                for x1, y1, x2, y2, _ in video.truth[k]:
                    dx = 0.6 * (x2 - x1) if how == "shifted" else 0.0
                    from edgeguard.geometry import Box

                    r = region_for(Box(x1 + dx, y1, x2 + dx, y2), expand=rc.expand,
                                   width=W, height=H)
                    if r is not None:
                        regions.append(r)
                redact(out, regions, mode=mode, shape=rc.shape, color=rc.color)
            _, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
            yield cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    run = Run()
    for k, (raw, out) in enumerate(zip(frames_of(video.path), gen(), strict=False)):
        if k % 5:
            continue
        for box in video.truth[k]:
            b = run.faces.setdefault(bin_of(box[4]), [0, 0])
            b[1] += 1
            if covered(out, raw, box) < COVER:
                b[0] += 1
    return run


# ------------------------------------------------------------------------------- daemon


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_daemon(video: Video, mode: str, work: Path, camera: dict[str, str],
               repo: Path = REPO) -> tuple[Run, dict[str, object]]:
    shm = Path(tempfile.mkdtemp(prefix="eg-camtruth-", dir="/dev/shm"))
    outbox = work / f"out-{video.name}-{mode}"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.mkdir(parents=True)
    extra = "".join(f"{k} = {v}\n" for k, v in camera.items())
    cfg = work / "edgeguard.toml"
    cfg.write_text(f"""
[daemon]
inbox = "{shm}/inbox"
outbox = "{outbox}"
[redact]
mode = "{mode}"
[camera]
source = "file:{video.path}"
fps = {FPS}
video = true
video_format = "mkv"
segment_s = 3600
{extra}""")
    state = shm / "state.json"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    log = (work / f"daemon-{video.name}-{mode}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edgeguard", "run", "--config", str(cfg)],
                            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    cam: dict[str, object] = {}
    cpu0 = cpu1 = None
    f0 = 0
    try:
        deadline = time.monotonic() + 60 + 20 * video.frames / FPS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited: see {log.name}")
            with contextlib.suppress(OSError, ValueError):
                cam = json.loads(state.read_text()).get("camera") or {}
            if cpu0 is None and int(cam.get("frames", 0) or 0) > 0:  # type: ignore[call-overload]
                cpu0, f0 = cpu_s(proc.pid), int(cam["frames"])  # type: ignore[call-overload]
            if cam.get("state") in ("ended", "failed"):
                cpu1 = cpu_s(proc.pid)
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the file camera did not end in time")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        with contextlib.suppress(OSError, ValueError):
            cam = json.loads(state.read_text()).get("camera") or cam
        shutil.rmtree(shm, ignore_errors=True)
    videos = sorted(outbox.glob("cam-*.mkv"))

    def outs() -> Iterator[np.ndarray]:
        for v in videos:
            yield from frames_of(v)

    run = score(video, outs())
    frames_seen = video.frames - f0
    info: dict[str, object] = {
        "segments": len(videos),
        "cpu_ms_per_camera_frame": round(1e3 * ((cpu1 or 0) - (cpu0 or 0)) /
                                         max(1, frames_seen), 1),
        **{k: cam.get(k) for k in ("frames", "written", "missed", "failed", "fps",
                                   "detect_ms", "frame_ms", "views_per_frame", "latency_ms",
                                   "latency_ms_p95", "latency_ms_max", "video_segments",
                                   "searched")},
    }
    shutil.rmtree(outbox, ignore_errors=True)
    return run, info


def run_inprocess(video: Video, mode: str, work: Path, camera: dict[str, str]) -> tuple[
        Run, dict[str, object]]:
    """The same search in this process, unpaced: every frame searched at the full budget,
    so the leaks do not depend on the machine's load (``--inprocess``)."""
    import tomllib

    from edgeguard import config
    from edgeguard.camera.loop import CameraService, World
    from edgeguard.pipeline import Pipeline

    extra = tomllib.loads("".join(f"{k} = {v}\n" for k, v in camera.items()))
    cfg = config.from_dict({"redact": {"mode": mode}, "camera": {
        "source": f"file:{video.path}", "fps": FPS, "video": True, "video_format": "mkv",
        "segment_s": 3600.0, "max_frame_age_s": 60.0, **extra}})
    outbox = work / f"out-{video.name}-{mode}"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.mkdir(parents=True)
    svc = CameraService(cfg, Pipeline(cfg), outbox, world=World(paced=False))
    svc.start()
    svc.join()
    svc.stop()
    st = svc.status()
    run = score(video, (f for v in sorted(outbox.glob("cam-*.mkv")) for f in frames_of(v)))
    shutil.rmtree(outbox, ignore_errors=True)
    return run, {k: st.get(k) for k in ("frames", "written", "searched", "detect_ms",
                                        "views_per_frame")}


def summary(run: Run) -> dict[str, object]:
    leaked = {k: f"{v[0]}/{v[1]}" for k, v in sorted(run.faces.items(),
                                                       key=lambda kv: _bin_key(kv[0]))}
    ge20 = sum(v[0] for k, v in run.faces.items() if _bin_key(k) >= 20)
    return {"leaked_by_height": leaked, "leaked_ge20": ge20,
            "leaked_all": sum(v[0] for v in run.faces.values()),
            "face_frames": sum(v[1] for v in run.faces.values()),
            "slots": run.slots, "written": run.written, "repeats": run.repeats,
            "blank": run.blank}


def _bin_key(k: str) -> int:
    return 0 if k.startswith("<") else int(k.split("-")[0].rstrip("+"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/faces"))
    ap.add_argument("--modes", default="blur,pixelate,solid")
    ap.add_argument("--videos", default="small,mixed")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--camera", action="append", default=[],
                    help="extra [camera] key = TOML value, e.g. lores_search='\"whole\"'")
    ap.add_argument("--no-oracle", action="store_true")
    ap.add_argument("--inprocess", action="store_true",
                    help="search in this process, unpaced (every frame, load-independent)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="build the videos here and keep them")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="run the daemon from this source tree (e.g. an older commit's, "
                         "to measure it on the same videos)")
    args = ap.parse_args()
    if not (args.data / "caltech_webfaces" / "annotations.json").exists():
        print(f"{args.data}: no caltech_webfaces annotations", file=sys.stderr)
        return 2
    camera = dict(kv.split("=", 1) for kv in args.camera)
    camera = {k.strip(): v.strip() for k, v in camera.items()}
    rng = np.random.default_rng(13)
    cards = iter(load_cards(args.data, rng))
    n = round(args.seconds * FPS)
    results: dict[str, object] = {"camera": camera, "frames_per_video": n}
    with tempfile.TemporaryDirectory(prefix="eg-camtruth-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lay = layouts(args.seconds)
        vids = [build(v, lay[v], cards, n, work, rng) for v in args.videos.split(",")]
        for mode in args.modes.split(","):
            if not args.no_oracle:
                for how in ("exact", "none", "shifted"):
                    o = [summary(oracle(v, mode, how)) for v in vids]
                    results[f"oracle {mode} {how}"] = [
                        {k: s[k] for k in ("leaked_all", "face_frames")} for s in o]
                    if not args.json:
                        print(f"oracle {mode:8s} {how:8s}",
                              [f"{s['leaked_all']}/{s['face_frames']}" for s in o], flush=True)
            for v in vids:
                run, info = (run_inprocess(v, mode, work, camera) if args.inprocess
                             else run_daemon(v, mode, work, camera, args.repo))
                res = {**summary(run), **info, "worst": run.worst[:8]}
                results[f"{v.name} {mode}"] = res
                if not args.json:
                    print(f"{v.name:6s} {mode:8s} {json.dumps(res)}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
