"""Load and soak: thousands of mixed files through the real daemon, measured.

    python benchmarks/soak.py [--seconds 240] [--rate 6] [--burst 150] [--burst-every 45]
                              [--json report.json]

``make soak`` runs it (minutes; not part of ``make test``). It starts the real
``python -m edgeguard run`` (real inotify, real models, folders on /dev/shm, its own
NOTIFY_SOCKET) and, for ``--seconds``, drops files at a steady ``--rate`` per second plus a
burst of ``--burst`` files every ``--burst-every`` seconds. The files are a mix of sizes
(64 px to 1080p), formats (JPEG, PNG, WebP) and content (the astronaut's face, no face),
with about one in twenty bad (random bytes, truncated). A consumer takes each output away
as a downstream system would, after checking it decodes. Then the inbox drains and the
daemon is stopped with SIGTERM.

Reported: throughput, end-to-end latency (drop to published output: the output's mtime)
p50/p95/p99, the daemon's RSS (start, peak, at each quarter, and the growth over the second
half as MB per hour: a leak shows as growth), and the final accounting: every input is
exactly one output or one failure (inputs = outputs + failures), nothing lost, no
duplicate, no temporary left. Exit status 1 when the accounting does not balance.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.appliance import RssSampler, config_file, failures  # noqa: E402
from helpers.daemon import Daemon, shm_dir, start_daemon  # noqa: E402

SIZES = ((64, 64), (128, 128), (256, 256), (640, 480), (1280, 720), (1920, 1080))
BAD_SHARE = 0.05


@dataclass
class Pool:
    """Encoded inputs to draw from: (suffix, bytes, bad)."""

    items: list[tuple[str, bytes, bool]] = field(default_factory=list)


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    params: dict[str, object] = {"quality": 88} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(rgb).save(buf, fmt, **params)
    return buf.getvalue()


def make_pool(seed: int) -> Pool:
    from skimage import data

    rng = np.random.default_rng(seed)
    face = np.ascontiguousarray(data.astronaut())
    pool = Pool()
    for w, h in SIZES:
        side = min(w, h)
        canvas = np.full((h, w, 3), 110, np.uint8)
        x0 = (w - side) // 2
        canvas[:, x0:x0 + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        yy, xx = np.mgrid[0:h, 0:w]
        plain = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1)
        plain = np.clip(plain + rng.integers(-10, 11, plain.shape), 0, 255).astype(np.uint8)
        for content in (canvas, plain):
            for fmt, suffix in (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp")):
                if fmt != "JPEG" and w > 640:
                    continue  # big PNG/WebP encodes slow the generator, not the daemon
                pool.items.append((suffix, _encode(content, fmt), False))
    good = [d for _, d, _ in pool.items]
    pool.items.append((".jpg", rng.bytes(5000), True))
    pool.items.append((".png", rng.bytes(20000), True))
    pool.items.append((".jpg", good[0][: len(good[0]) // 2], True))  # truncated
    pool.items.append((".webp", good[2][: len(good[2]) // 3], True))
    return pool


class Dropper:
    """Drops files (written in staging on the same tmpfs, renamed in) and remembers when."""

    def __init__(self, work: Path, pool: Pool, seed: int) -> None:
        self.work = work
        self.inbox = work / "inbox"
        self.staging = work / "staging"
        self.staging.mkdir(exist_ok=True)
        self.pool = pool
        self.rng = random.Random(seed)
        self.n = 0
        self.dropped: dict[str, tuple[float, bool]] = {}  # name -> (wall time, bad)
        self.in_burst: set[str] = set()
        self.good = [i for i in pool.items if not i[2]]
        self.bad = [i for i in pool.items if i[2]]

    def drop(self, *, burst: bool = False) -> None:
        bad = self.rng.random() < BAD_SHARE
        suffix, data, _ = self.rng.choice(self.bad if bad else self.good)
        name = f"s{self.n:06d}{suffix}"
        self.n += 1
        tmp = self.staging / name
        tmp.write_bytes(data)
        os.rename(tmp, self.inbox / name)
        self.dropped[name] = (time.time(), bad)
        if burst:
            self.in_burst.add(name)


class Consumer(threading.Thread):
    """Takes outputs away, as a downstream system would, after checking each decodes."""

    def __init__(self, outbox: Path) -> None:
        super().__init__(daemon=True)
        self.outbox = outbox
        self.seen: dict[str, float] = {}  # output name -> its mtime (publication)
        self.duplicates: list[str] = []
        self.broken: list[str] = []
        self.stop_event = threading.Event()

    def sweep(self) -> None:
        try:
            names = os.listdir(self.outbox)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") or name.endswith(".json"):
                continue
            path = self.outbox / name
            try:
                mtime = path.stat().st_mtime
                ok = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
            except FileNotFoundError:
                continue
            if ok is None:
                self.broken.append(name)
            stem = name.rsplit(".", 1)[0]
            if stem in self.seen:
                self.duplicates.append(name)
            self.seen[stem] = mtime
            path.unlink()

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            self.sweep()
        self.sweep()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def peak_rate(times: list[float], window: float = 5.0) -> float:
    """The most outputs published in any ``window`` seconds, per second (capacity, seen
    while a burst is being worked off)."""
    t = sorted(times)
    best, lo = 0, 0
    for hi in range(len(t)):
        while t[hi] - t[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / window


def growth_mb_per_hour(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over the second half of the run, in MB per hour."""
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    if len(half) < 3:
        return float("nan")
    t = np.array([s[0] for s in half])
    r = np.array([s[1] for s in half]) / 1024.0
    slope = float(np.polyfit(t, r, 1)[0])
    return slope * 3600.0


def run(args: argparse.Namespace) -> dict[str, object]:
    work = shm_dir()
    pool = make_pool(args.seed)
    cfg = config_file(work, stable_s=0.5, failed_max_count=1_000_000, sidecar=False)
    d: Daemon = start_daemon(["--config", str(cfg)], workdir=work)
    try:
        d.wait_ready()
        sampler = RssSampler(d, step=0.5)
        consumer = Consumer(work / "outbox")
        consumer.start()
        dropper = Dropper(work, pool, args.seed)
        t0 = time.monotonic()
        next_burst = t0 + args.burst_every / 2
        steady_interval = 1.0 / args.rate
        next_drop = t0
        backlog_max = 0
        print(f"soak: {args.seconds:.0f} s, {args.rate:g} files/s steady, a burst of "
              f"{args.burst} every {args.burst_every:.0f} s; work in {work}", flush=True)
        last_report = t0
        while (now := time.monotonic()) < t0 + args.seconds:
            if now >= next_burst:
                for _ in range(args.burst):
                    dropper.drop(burst=True)
                next_burst += args.burst_every
            while next_drop <= now:
                dropper.drop()
                next_drop += steady_interval
            backlog_max = max(backlog_max, len(os.listdir(work / "inbox")))
            if now - last_report >= 30:
                last_report = now
                print(f"  {now - t0:5.0f} s: dropped {dropper.n}, out {len(consumer.seen)}, "
                      f"failed {len(failures(work / 'failed'))}, backlog "
                      f"{len(os.listdir(work / 'inbox'))}, RSS {d.rss_kb() // 1024} MB",
                      flush=True)
            time.sleep(min(0.05, max(0.0, next_drop - time.monotonic())))
        drop_end = time.monotonic()
        deadline = drop_end + args.drain_timeout
        while os.listdir(work / "inbox") and time.monotonic() < deadline:
            time.sleep(0.2)
        drained_at = time.monotonic()
        time.sleep(1.0)
        sampler.stop()
        d.proc.send_signal(signal.SIGTERM)
        code = d.proc.wait(60)
        consumer.stop_event.set()
        consumer.join(10)
        state = json.loads((work / "state.json").read_text())
        fails = {os.fsdecode(k) for k in failures(work / "failed")}
        left = os.listdir(work / "inbox")
        temporaries = [n for n in os.listdir(work / "outbox") if n.startswith(".")]
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        d.notify.close()
    # Accounting: each input is one output (same stem) or one failure (same name).
    latencies, lost, wrong = [], [], []
    steady, burst = [], []
    for name, (when, bad) in dropper.dropped.items():
        stem = name.rsplit(".", 1)[0]
        if stem in consumer.seen:
            latencies.append(consumer.seen[stem] - when)
            (burst if name in dropper.in_burst else steady).append(latencies[-1])
            if bad:
                wrong.append(name)  # a bad file must never come out
        elif name in fails:
            if not bad:
                wrong.append(name)
        else:
            lost.append(name)
    samples = sampler.samples
    quarters = {f"{q}%": samples[min(len(samples) - 1, len(samples) * q // 100)][1] // 1024
                for q in (25, 50, 75, 100)} if samples else {}
    busy_s = drained_at - t0
    report: dict[str, object] = {
        "seconds_dropping": round(drop_end - t0, 1),
        "seconds_to_drain": round(drained_at - drop_end, 1),
        "inputs": dropper.n,
        "inputs_bad": sum(1 for _, bad in dropper.dropped.values() if bad),
        "outputs": len(consumer.seen),
        "failures": len(fails),
        "lost": len(lost),
        "duplicates": len(consumer.duplicates),
        "broken_outputs": len(consumer.broken),
        "misrouted": len(wrong),
        "left_in_inbox": len(left),
        "temporaries": len(temporaries),
        "daemon_exit": code,
        "daemon_processed": state.get("processed"),
        "daemon_failed": state.get("failed"),
        "throughput_per_s": round((len(consumer.seen) + len(fails)) / busy_s, 2),
        "throughput_peak_per_s_5s_window": round(peak_rate(list(consumer.seen.values())), 2),
        "latency_s": {"p50": round(percentile(latencies, 50), 3),
                      "p95": round(percentile(latencies, 95), 3),
                      "p99": round(percentile(latencies, 99), 3),
                      "max": round(max(latencies, default=float("nan")), 3)},
        "latency_steady_s": {"p50": round(percentile(steady, 50), 3),
                             "p95": round(percentile(steady, 95), 3),
                             "p99": round(percentile(steady, 99), 3)},
        "latency_burst_s": {"p50": round(percentile(burst, 50), 3),
                            "p95": round(percentile(burst, 95), 3),
                            "p99": round(percentile(burst, 99), 3)},
        "backlog_max": backlog_max,
        "rss_mb": {"start": sampler.baseline_kb // 1024, "peak": sampler.peak_kb // 1024,
                   **quarters},
        "rss_growth_mb_per_hour_second_half": round(growth_mb_per_hour(samples), 1),
    }
    report["balanced"] = (report["lost"] == 0 and report["duplicates"] == 0
                          and report["misrouted"] == 0 and report["broken_outputs"] == 0
                          and report["left_in_inbox"] == 0 and report["temporaries"] == 0
                          and dropper.n == len(consumer.seen) + len(fails) and code == 0)
    if report["balanced"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        report["work"] = str(work)
        report["lost_names"] = lost[:20]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0, help="how long files are dropped")
    p.add_argument("--rate", type=float, default=6.0, help="steady files per second")
    p.add_argument("--burst", type=int, default=150, help="files in each burst")
    p.add_argument("--burst-every", type=float, default=45.0, help="seconds between bursts")
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if report["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
