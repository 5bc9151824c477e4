"""The outside view of a running appliance, shared by the robustness tests and the soak.

Folders are listed with bytes names (an inbox may hold names that are not UTF-8), inputs
are dropped the way a careful client does (written elsewhere on the same tmpfs, renamed
in), and the daemon's memory is sampled from /proc while it works.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

from edgeguard.sources.spool import spool_for
from helpers.daemon import Daemon, umount

HIDDEN = b"."


def config_file(work: Path, *, extra: str = "", sidecar: bool = True,
                **daemon: object) -> Path:
    """An edgeguard.toml for folders under ``work`` (inbox, outbox, failed on its tmpfs)."""
    settings = {"inbox": str(work / "inbox"), "outbox": str(work / "outbox"),
                "failed": str(work / "failed"), "stable_s": 0.3} | daemon
    lines = ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[output]", f"sidecar = {json.dumps(sidecar)}", extra]
    path = work / "edgeguard.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def files(root: Path) -> dict[bytes, Path]:
    """Every non-folder entry below ``root`` (links, FIFOs, sockets too), by bytes path."""
    out: dict[bytes, Path] = {}
    base = os.fsencode(root)
    if not os.path.isdir(base):
        return out
    for folder, dirs, names in os.walk(base):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, base)] = Path(os.fsdecode(full))
    return out


def pending(inbox: Path) -> dict[bytes, Path]:
    """What the daemon has yet to settle: the inbox's files and those it claimed from there
    into its private spool (each arrival is claimed at once, so an empty inbox alone means
    nothing)."""
    return files(inbox) | files(spool_for(inbox))


def outputs(outbox: Path) -> dict[bytes, Path]:
    """The images in the outbox: no sidecars, no hidden temporaries."""
    return {k: v for k, v in files(outbox).items()
            if not k.endswith(b".json") and not os.path.basename(k).startswith(HIDDEN)}


def temporaries(outbox: Path) -> list[bytes]:
    return [k for k in files(outbox) if os.path.basename(k).startswith(HIDDEN)]


def failures(failed: Path) -> dict[bytes, Path]:
    """The raw files in failed/, without their .reason files."""
    return {k: v for k, v in files(failed).items() if not k.endswith(b".reason")}


def reason(failed: Path, rel: bytes) -> str:
    """The first line of a failure's reason."""
    path = os.path.join(os.fsencode(failed), rel + b".reason")
    with open(path, "rb") as fh:
        return fh.read().decode(errors="surrogateescape").splitlines()[0]


def drop(work: Path, name: str | bytes, data: bytes) -> bytes:
    """Write ``data`` in work/staging (same tmpfs) and rename it into the inbox."""
    staging = os.path.join(os.fsencode(work), b"staging")
    os.makedirs(staging, exist_ok=True)
    tmp = os.path.join(staging, b"drop-%d.tmp" % threading.get_ident())
    with open(tmp, "wb") as fh:
        fh.write(data)
    dest = os.path.join(os.fsencode(work), b"inbox", os.fsencode(name))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.rename(tmp, dest)
    return dest


class RssSampler:
    """Samples a process's VmRSS from /proc every ``step`` seconds, in a thread.

    ``samples`` are (seconds since start, RSS in KiB); ``peak_kb`` also takes the kernel's
    own high-water mark (VmHWM) into account when read while the process lives.
    """

    def __init__(self, daemon: Daemon, step: float = 0.02) -> None:
        self.daemon = daemon
        self.step = step
        self.samples: list[tuple[float, int]] = []
        self.hwm_kb = 0
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self.baseline_kb = daemon.rss_kb()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.daemon.rss_kb()
                self.hwm_kb = max(self.hwm_kb, self.daemon.rss_kb("VmHWM"))
            except (OSError, AssertionError):
                return
            self.samples.append((time.monotonic() - self._t0, rss))
            self._stop.wait(self.step)

    def stop(self) -> None:
        with contextlib.suppress(OSError, AssertionError):
            self.hwm_kb = max(self.hwm_kb, self.daemon.rss_kb("VmHWM"))
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_kb(self) -> int:
        return max([self.hwm_kb, self.baseline_kb] + [r for _, r in self.samples])


def cleanup(root: Path) -> None:
    """Unmount whatever a test mounted below ``root``, then remove it."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mp in sorted((m for m in mounts if m.startswith(str(root))), reverse=True):
        umount(Path(mp))
    shutil.rmtree(root, ignore_errors=True)
