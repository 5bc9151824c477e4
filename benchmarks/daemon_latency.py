#!/usr/bin/env python3
"""Drop-to-output latency and burst throughput of `edgeguard run`, beside `edgeguard blur`.

    .venv/bin/python benchmarks/daemon_latency.py [--sizes 1080p,12mp] [--n 20] [--burst 40]

All in one run, on the same JPEG files (built from scikit-image's astronaut, several faces
per frame):

- daemon latency: one file at a time is renamed into the inbox (tmpfs); the clock runs from
  the rename to the moment the output exists in the outbox (polled every millisecond);
  p50 and p95 per size;
- the same files in-process (``Pipeline.redact_file`` plus an atomic write), alternating
  with the daemon file by file so both see the same machine load: the floor, so latency
  minus this is the daemon's own cost;
- daemon burst: ``--burst`` files renamed in at once; files/s from the first rename to the
  last output; the same files in-process on two threads;
- ``edgeguard blur`` on one file (its wall time includes start-up and model loading) and on
  the burst set with ``-j 2``;
- peak RSS (VmHWM) of the daemon and of each `edgeguard blur` run.

The inbox is a fresh folder under /dev/shm; outputs go to bench-out/daemon-latency/ on the
repository's disk (gitignored), for the daemon and `blur` alike. Results are printed as a
Markdown table and written to bench-out/daemon-latency/results.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZES = {"1080p": (1920, 1080), "12mp": (4000, 3000)}


def make_jpeg(size: tuple[int, int], seed: int) -> bytes:
    """A frame of the given size with the astronaut's face at a few scales and places."""
    from skimage import data

    w, h = size
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", size, (96, 110, 120))
    face = Image.fromarray(data.astronaut())
    for scale in (0.5, 0.3, 0.2):
        side = max(64, int(min(w, h) * scale))
        tile = face.resize((side, side), Image.Resampling.BILINEAR)
        x = int(rng.integers(0, max(1, w - side)))
        y = int(rng.integers(0, max(1, h - side)))
        canvas.paste(tile, (x, y))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Notify:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"READY=1" in data.split(b"\n"):
                self.ready.set()


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def wait_exists(path: Path, timeout: float = 120.0) -> float:
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no output {path}")
        time.sleep(0.001)
    return time.perf_counter()


def run_child(cmd: list[str]) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak RSS in kB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, proc.returncode, int(usage.ru_maxrss)


class InProcess:
    """Pipeline.redact_file plus an atomic write, in this process: the floor the daemon
    is compared with (what it adds is the watcher, queue, journal and its own checks)."""

    def __init__(self, dest: Path) -> None:
        from edgeguard.config import Config
        from edgeguard.pipeline import Pipeline

        self.pipe = Pipeline(Config())
        self.dest = dest
        dest.mkdir(parents=True)

    def one(self, src: Path) -> float:
        from edgeguard.sinks.fileops import publish_bytes

        t0 = time.perf_counter()
        out = self.pipe.redact_file(src)
        publish_bytes(out.data, self.dest, src.stem + out.suffix)
        return time.perf_counter() - t0

    def burst(self, inputs: list[Path]) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(self.one, inputs))
        return len(inputs) / (time.perf_counter() - t0)


class DaemonUnderTest:
    def __init__(self, shm: Path, outbox: Path) -> None:
        self.shm = shm
        self.outbox = outbox
        cfg = shm / "edgeguard.toml"
        cfg.write_text(f'[daemon]\ninbox = "{shm}/inbox"\nfailed = "{shm}/failed"\n'
                       f'outbox = "{outbox}"\n')
        self.notify = Notify(shm / "notify.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeguard", "run", "--config", str(cfg)], cwd=REPO,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self.notify.ready.wait(120):
            raise RuntimeError("the daemon did not become ready")

    def stage(self, name: str, data: bytes) -> Path:
        staged = self.shm / "staging" / name
        staged.write_bytes(data)
        return staged

    def one(self, name: str, data: bytes) -> float:
        """Seconds from the rename into the inbox to the output's existence."""
        staged = self.stage(name, data)
        t0 = time.perf_counter()
        os.rename(staged, self.shm / "inbox" / name)
        return wait_exists(self.outbox / name) - t0

    def burst(self, items: list[tuple[str, bytes]]) -> float:
        staged = [self.stage(name, data) for name, data in items]
        t0 = time.perf_counter()
        for path in staged:
            os.rename(path, self.shm / "inbox" / path.name)
        end = max(wait_exists(self.outbox / name) for name, _ in items)
        return len(items) / (end - t0)

    def close(self) -> int:
        hwm = vm_hwm_kb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.notify.sock.close()
        return hwm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1080p,12mp")
    ap.add_argument("--n", type=int, default=20, help="files per size for latency")
    ap.add_argument("--burst", type=int, default=40, help="files per size for the burst")
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]

    shm = Path("/dev/shm") / f"edgeguard-bench-{uuid.uuid4().hex[:8]}"
    out_root = REPO / "bench-out" / "daemon-latency"
    shutil.rmtree(out_root, ignore_errors=True)
    (shm / "staging").mkdir(parents=True)
    out_root.mkdir(parents=True)
    files = {s: [make_jpeg(SIZES[s], seed=i) for i in range(4)] for s in sizes}
    results: dict[str, dict[str, float]] = {}
    daemon = DaemonUnderTest(shm, out_root / "daemon")
    try:
        inproc = InProcess(out_root / "inprocess")
        for s in sizes:
            src = shm / "src" / s
            src.mkdir(parents=True)
            for i in range(max(args.n, args.burst)):
                (src / f"{s}-{i:03d}.jpg").write_bytes(files[s][i % 4])
            daemon.one(f"warm-{s}.jpg", files[s][0])  # first image of a size: not timed
            inproc.one(src / f"{s}-000.jpg")
            # Alternate the two, so both see the same load on the machine.
            d_lat, p_lat = [], []
            for i in range(args.n):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for who in order:
                    if who == 0:
                        d_lat.append(daemon.one(f"lat-{s}-{i:03d}.jpg", files[s][i % 4]))
                    else:
                        p_lat.append(inproc.one(src / f"{s}-{i:03d}.jpg"))
            d_rate = daemon.burst([(f"burst-{s}-{i:03d}.jpg", files[s][i % 4])
                                   for i in range(args.burst)])
            p_rate = inproc.burst(sorted(src.iterdir())[: args.burst])
            burst_dir = shm / "blur-burst" / s
            burst_dir.mkdir(parents=True)
            for p in sorted(src.iterdir())[: args.burst]:
                shutil.copy(p, burst_dir / p.name)
            blur1 = run_child([sys.executable, "-m", "edgeguard", "blur",
                               str(src / f"{s}-000.jpg"), "-o", str(out_root / "blur-one" / s)])
            blurn = run_child([sys.executable, "-m", "edgeguard", "blur", str(burst_dir), "-j",
                               "2", "-o", str(out_root / "blur-burst" / s)])
            results[s] = {
                "daemon_latency_ms_p50": pct(d_lat, 50) * 1000,
                "daemon_latency_ms_p95": pct(d_lat, 95) * 1000,
                "inprocess_ms_p50": pct(p_lat, 50) * 1000,
                "inprocess_ms_p95": pct(p_lat, 95) * 1000,
                "daemon_burst_files_per_s": d_rate,
                "inprocess_burst_files_per_s": p_rate,
                "blur_burst_files_per_s": args.burst / blurn[0],
                "blur_one_file_wall_s": blur1[0],
                "blur_peak_rss_mb": max(blur1[2], blurn[2]) / 1024,
            }
    finally:
        daemon_rss = daemon.close() / 1024
        shutil.rmtree(shm, ignore_errors=True)

    load = os.getloadavg()
    summary = {"sizes": results, "daemon_peak_rss_mb": daemon_rss, "cpus": os.cpu_count(),
               "loadavg": load, "n": args.n, "burst": args.burst}
    (out_root / "results.json").write_text(json.dumps(summary, indent=1))
    print("| size | daemon drop->output p50 / p95 | in-process redact+write p50 / p95 | "
          "daemon burst | in-process burst | `blur -j 2` burst | `blur` one file (wall) |")
    print("|---|---|---|---|---|---|---|")
    for s, m in results.items():
        print(f"| {s} | {m['daemon_latency_ms_p50']:.0f} / {m['daemon_latency_ms_p95']:.0f} ms "
              f"| {m['inprocess_ms_p50']:.0f} / {m['inprocess_ms_p95']:.0f} ms "
              f"| {m['daemon_burst_files_per_s']:.2f} files/s "
              f"| {m['inprocess_burst_files_per_s']:.2f} files/s "
              f"| {m['blur_burst_files_per_s']:.2f} files/s | {m['blur_one_file_wall_s']:.2f} s |")
    blur_rss = max(m["blur_peak_rss_mb"] for m in results.values())
    print(f"\npeak RSS: daemon {daemon_rss:.0f} MB, `edgeguard blur` {blur_rss:.0f} MB "
          f"({os.cpu_count()} CPUs, load average {load[0]:.1f}; {args.n} latency files and "
          f"a {args.burst}-file burst per size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
