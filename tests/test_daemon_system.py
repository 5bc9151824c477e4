"""System tests: the real `edgeguard run` process, real inotify, real tmpfs, real models.

Each test starts ``python -m edgeguard run`` with the real pipeline on folders under
/dev/shm (tmpfs) and listens on its own NOTIFY_SOCKET, as systemd would. Tests that need a
small or read-only file system mount a tmpfs (root with CAP_SYS_ADMIN). Missing
prerequisites skip, unless EDGEGUARD_REQUIRE_SYSTEM=1 makes them failures.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import (
    PATIENCE,
    REPO,
    Daemon,
    hang_on,
    mount_tmpfs,
    remount,
    require_models,
    running,
    shm_dir,
    skip_or_fail,
    start_daemon,
    umount,
    wait_for,
)
from helpers.images import decode, jpeg

from edgeguard import mounts
from edgeguard.sources.spool import spool_for

pytestmark = pytest.mark.system


@pytest.fixture(scope="module", autouse=True)
def _models_present() -> None:
    require_models()


@pytest.fixture
def work() -> Iterator[Path]:
    root = shm_dir()
    yield root
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mp in sorted((m for m in mounts if m.startswith(str(root))), reverse=True):
        umount(Path(mp))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def face_jpeg(astronaut_rgb: np.ndarray) -> bytes:
    return jpeg(astronaut_rgb)


def _config(work: Path, *, extra: str = "", **daemon: object) -> Path:
    settings = {"inbox": str(work / "inbox"), "outbox": str(work / "outbox"),
                "failed": str(work / "failed"), "stable_s": 0.3} | daemon
    lines = ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[output]", "sidecar = true", extra]
    path = work / "edgeguard.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _files(root: Path) -> dict[str, Path]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*"))
            if p.is_symlink() or not p.is_dir()}  # FIFOs and links count too


def _pending(inbox: Path) -> dict[str, Path]:
    """The inbox's files and those the daemon claimed from it into its spool."""
    return _files(inbox) | _files(spool_for(inbox))


def _outputs(work: Path) -> dict[str, Path]:
    return {k: v for k, v in _files(work / "outbox").items() if not k.endswith(".json")}


def _drop(work: Path, name: str, data: bytes) -> Path:
    """Write to a staging folder on the same tmpfs, then rename into the inbox."""
    staging = work / "staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / Path(name).name
    tmp.write_bytes(data)
    dest = work / "inbox" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


def _assert_redacted(raw: bytes, out: Path) -> None:
    """A valid image of the same size whose faces changed and whose background did not."""
    before, after = decode(raw).astype(np.int16), decode(out.read_bytes()).astype(np.int16)
    assert after.shape == before.shape
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["faces"] >= 1 and side["regions"]
    mask = np.zeros(before.shape[:2], bool)
    for x1, y1, x2, y2 in side["regions"]:
        mask[y1:y2, x1:x2] = True
    # The face (the largest region) is blurred beyond recognition; small extra regions
    # (low-score candidates redacted to be safe) may sit on flat background.
    x1, y1, x2, y2 = max(side["regions"], key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
    assert np.abs(after[y1:y2, x1:x2] - before[y1:y2, x1:x2]).mean() > 8.0
    assert np.abs(after[~mask] - before[~mask]).mean() < 4.0  # re-encoding noise only


def _state(work: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((work / "state.json").read_text())
    return data


# -- drops ------------------------------------------------------------------------------------


def test_every_way_of_dropping_a_file_is_taken_once(
        work: Path, face_jpeg: bytes, tmp_path: Path) -> None:
    cfg = _config(work)
    env = {"WATCHDOG_USEC": "1000000"}
    with running(["--config", str(cfg)], workdir=work, env=env) as d:
        ready_at = d.notify.lines("READY=1")[0][0]
        inbox = work / "inbox"
        (inbox / "written.jpg").write_bytes(face_jpeg)  # open, write, close
        (inbox / "renamed.jpg.part").write_bytes(face_jpeg)
        os.rename(inbox / "renamed.jpg.part", inbox / "renamed.jpg")
        _drop(work, "moved.jpg", face_jpeg)  # from another folder, same tmpfs
        (tmp_path / "other-fs.jpg").write_bytes(face_jpeg)
        shutil.move(tmp_path / "other-fs.jpg", inbox / "other-fs.jpg")  # copy + delete
        (work / "linked-src.jpg").write_bytes(face_jpeg)
        os.link(work / "linked-src.jpg", inbox / "linked.jpg")  # appears with no close
        _drop(work, "album/deeper/nested.jpg", face_jpeg)
        with (inbox / "slow.jpg").open("wb") as slow:
            half = len(face_jpeg) // 2
            slow.write(face_jpeg[:half])
            slow.flush()
            time.sleep(1.0)  # longer than stable_s: a writer that pauses
            slow.write(face_jpeg[half:])
        names = {"written.jpg", "renamed.jpg", "moved.jpg", "other-fs.jpg", "linked.jpg",
                 "album/deeper/nested.jpg", "slow.jpg"}
        wait_for(lambda: set(_outputs(work)) == names and not _pending(inbox), 30,
                 f"outputs {sorted(names)}\n{d.output()}")
        time.sleep(0.5)
        assert set(_outputs(work)) == names  # nothing twice
        for name in sorted(names):
            _assert_redacted(face_jpeg, work / "outbox" / name)
        assert _files(work / "failed") == {}
        wait_for(lambda: "processed 7," in d.notify.lines("STATUS=")[-1][1], 5, "STATUS=")
        # Pinged while it worked (a count in a time window would depend on the machine).
        wait_for(lambda: len([t for t, _ in d.notify.lines("WATCHDOG=1") if t > ready_at]) >= 3,
                 5, "three watchdog pings after READY=1")
        status = subprocess.run([sys.executable, "-m", "edgeguard", "status", "--config",
                                 str(cfg)], cwd=REPO, capture_output=True, text=True,
                                check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        sidecars = [json.loads((work / "outbox" / f"{n}.json").read_text()) for n in names]
        faces = sum(s["faces"] for s in sidecars)
        weak = sum(s["weak"] for s in sidecars)
        assert "running" in status.stdout
        assert f"processed 7, failed 0, faces {faces} (+{weak} weak regions)," in status.stdout
        assert d.stop() == 0
        d.notify.wait("STOPPING=1")
    assert _state(work)["state"] == "stopped"


def test_bad_files_and_special_entries_end_in_failed_with_a_reason(
        work: Path, face_jpeg: bytes) -> None:
    cfg = _config(work)
    with running(["--config", str(cfg)], workdir=work) as d:
        inbox = work / "inbox"
        _drop(work, "text.jpg", b"this is not an image\n")
        _drop(work, "truncated.jpg", face_jpeg[: len(face_jpeg) // 3])
        (inbox / "link.jpg").symlink_to(work / "staging" / "text.jpg")
        os.mkfifo(inbox / "fifo.jpg")
        _drop(work, ".hidden.jpg", face_jpeg)
        _drop(work, "ignored.jpg.tmp", face_jpeg)
        wanted = {"text.jpg", "truncated.jpg", "link.jpg", "fifo.jpg"}
        wait_for(lambda: {k for k in _files(work / "failed") if not k.endswith(".reason")}
                 == wanted, 20, f"failures\n{d.output()}")
        reasons = {k: (work / "failed" / f"{k}.reason").read_text() for k in wanted}
        assert "not an image" in reasons["text.jpg"]
        assert "symbolic link" in reasons["link.jpg"]
        assert "FIFO" in reasons["fifo.jpg"]
        assert reasons["truncated.jpg"].strip()
        assert (work / "failed" / "link.jpg").is_symlink()
        assert _outputs(work) == {}
        assert set(_files(inbox)) == {".hidden.jpg", "ignored.jpg.tmp"}  # never taken
        # The log says why and where the file is now (written just after the move).
        failed = work / "failed"
        wait_for(lambda: f"text.jpg moved to {failed / 'text.jpg'}: not an image"
                 in d.output(), 5, f"the reason in the log\n{d.output()}")
        assert f"failed inputs move to {failed}" in d.output()  # the ready line
        status = subprocess.run([sys.executable, "-m", "edgeguard", "status", "--config",
                                 str(cfg)], cwd=REPO, capture_output=True, text=True,
                                check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"failed/ {failed}\n" in status.stdout
        assert d.stop() == 0


# -- load and memory --------------------------------------------------------------------------


def test_a_burst_of_1000_files_is_processed_once_each_in_bounded_memory(
        work: Path, astronaut_rgb: np.ndarray) -> None:
    cfg = _config(work, stable_s=1.0)
    rng = np.random.default_rng(4)
    small = [jpeg(astronaut_rgb, size=(64, 64), quality=int(q)) for q in rng.integers(60, 95, 8)]
    with running(["--config", str(cfg)], workdir=work) as d:
        baseline = d.rss_kb()
        peak = [baseline]
        at_quarter: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    rss = d.rss_kb()
                except (OSError, AssertionError):
                    return
                peak[0] = max(peak[0], rss)
                if not at_quarter and len(_outputs(work)) >= 250:
                    at_quarter.append(rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        for i in range(1000):
            (work / "inbox" / f"b{i:04d}.jpg").write_bytes(small[i % len(small)])
        try:
            wait_for(lambda: len(_outputs(work)) == 1000 and not _pending(work / "inbox"), 90,
                     f"1000 outputs ({len(_outputs(work))} so far)")
        finally:
            stop.set()
            sampler.join()
        elapsed = time.monotonic() - t0
        assert sorted(_outputs(work)) == [f"b{i:04d}.jpg" for i in range(1000)]
        assert _files(work / "failed") == {}
        hwm = d.rss_kb("VmHWM")
        end = d.rss_kb()
        assert d.stop() == 0
    state = _state(work)
    assert state["processed"] == 1000
    print(f"\nburst: 1000 files in {elapsed:.1f} s ({1000 / elapsed:.0f} files/s); "
          f"RSS {baseline // 1024} MB at start, peak {max(peak[0], hwm) // 1024} MB")
    # Memory does not grow with the backlog (the queue holds paths, the inbox the files)
    # nor with the number of files done (nothing kept per item).
    assert max(peak[0], hwm) - baseline < 64 * 1024
    assert at_quarter and end - at_quarter[0] < 16 * 1024


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(
        work: Path, astronaut_rgb: np.ndarray) -> None:
    # Killed over and over at random moments, a file can be in hand at several deaths in a
    # row: that is what the poison-file guard counts, so it is lifted here (tested below).
    cfg = _config(work, stable_s=0.2, max_attempts=1000)
    rng = random.Random(9)
    data = [jpeg(astronaut_rgb, size=(s, s)) for s in (192, 256, 320)]
    dropped: set[str] = set()
    n = 0
    for round_ in range(8):
        for _ in range(30):
            name = f"k{n:04d}.jpg"
            _drop(work, name, data[n % len(data)])
            dropped.add(name)
            n += 1
        d = start_daemon(["--config", str(cfg)], workdir=work)
        try:
            if round_ % 3 == 0:
                time.sleep(rng.uniform(0.0, 0.3))  # maybe before READY, maybe just after
            else:
                d.wait_ready()
                time.sleep(rng.uniform(0.02, 0.4))
        finally:
            d.kill9()
            d.notify.close()
    with running(["--config", str(cfg)], workdir=work) as d:
        wait_for(lambda: not _pending(work / "inbox") and not _files(work / "journal"), 60,
                 f"the inbox to drain\n{d.output()}")
        assert d.stop() == 0
    outputs = _outputs(work)
    assert set(outputs) == dropped  # every input exactly once: no "-1" duplicates
    sidecars = {k for k in _files(work / "outbox") if k.endswith(".json")}
    assert sidecars == {f"{k}.json" for k in dropped}
    assert not [k for k in _files(work / "outbox") if k.startswith(".")]  # no temporaries
    assert _files(work / "failed") == {}
    for path in outputs.values():
        decode(path.read_bytes())  # complete, decodable


# -- the outbox failing -----------------------------------------------------------------------


def test_a_full_outbox_keeps_inputs_until_space_returns(work: Path, face_jpeg: bytes) -> None:
    mount_tmpfs(work / "outbox", "400k")
    filler = work / "outbox" / "filler.bin"
    filler.write_bytes(b"\0" * (340 * 1024))
    cfg = _config(work, retry_max_s=2.0)
    with running(["--config", str(cfg)], workdir=work) as d:
        for i in range(5):
            _drop(work, f"f{i}.jpg", face_jpeg)
        wait_for(lambda: "no space" in d.output(), 20, f"the full disk\n{d.output()}")
        time.sleep(1.0)
        # Each retry holds a temporary file in the outbox for the moment its write fails:
        # look between retries. One left behind would never go, and this would time out.
        seen: dict[str, set[str]] = {}

        def between_retries() -> bool:
            seen["inbox"] = set(_pending(work / "inbox"))
            seen["outbox"] = set(_files(work / "outbox"))
            return not [k for k in seen["outbox"] if k.startswith(".")]  # nothing partial

        wait_for(between_retries, 10, f"no temporary file in the outbox\n{d.output()}")
        waiting = seen["inbox"]
        assert waiting  # kept, not lost
        outputs = {k for k in seen["outbox"] if not k.endswith(".json")}
        assert outputs | waiting == {f"f{i}.jpg" for i in range(5)} | {"filler.bin"}
        wait_for(lambda: _state(work)["outbox_blocked"] is True, 5, "state: outbox blocked")
        status = subprocess.run([sys.executable, "-m", "edgeguard", "status", "--config",
                                 str(cfg)], cwd=REPO, capture_output=True, text=True,
                                check=False)
        assert "outbox: not writable" in status.stdout and "no space" in status.stdout
        assert d.output().count("stays queued") == 1  # logged once
        filler.unlink()
        wait_for(lambda: set(_outputs(work)) == {f"f{i}.jpg" for i in range(5)}
                 and not _pending(work / "inbox"), 30, f"recovery\n{d.output()}")
        assert "outbox writable again" in d.output()
        assert _files(work / "failed") == {}
        assert d.stop() == 0


def test_a_read_only_outbox_keeps_inputs_until_it_is_writable(
        work: Path, face_jpeg: bytes) -> None:
    mount_tmpfs(work / "outbox", "16m")
    cfg = _config(work, retry_max_s=2.0)
    with running(["--config", str(cfg)], workdir=work) as d:
        remount(work / "outbox", "ro")
        for i in range(3):
            _drop(work, f"r{i}.jpg", face_jpeg)
        wait_for(lambda: "read-only" in d.output(), 20, f"the read-only outbox\n{d.output()}")
        time.sleep(1.0)
        # Claimed from the inbox at once, kept in the spool while the outbox cannot take them.
        assert set(_pending(work / "inbox")) == {"r0.jpg", "r1.jpg", "r2.jpg"}
        remount(work / "outbox", "rw")
        wait_for(lambda: set(_outputs(work)) == {"r0.jpg", "r1.jpg", "r2.jpg"}
                 and not _pending(work / "inbox"), 30, f"recovery\n{d.output()}")
        assert not [k for k in _files(work / "outbox") if k.startswith(".")]
        assert d.stop() == 0


# -- signals ----------------------------------------------------------------------------------


def test_sighup_reloads_the_config_and_keeps_it_when_the_new_one_is_bad(
        work: Path, face_jpeg: bytes) -> None:
    cfg = _config(work)
    with running(["--config", str(cfg)], workdir=work) as d:
        _drop(work, "before.jpg", face_jpeg)
        wait_for(lambda: "before.jpg" in _outputs(work), 20, "first output")
        _config(work, hide_filenames=True,
                extra='[redact]\nmode = "solid"\nshape = "box"\ncolor = [255, 0, 255]')
        reload_at = time.monotonic()
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload: applied" in d.output(), 20, f"reload\n{d.output()}")
        d.notify.wait("RELOADING=1", after=reload_at)
        d.notify.wait("READY=1", after=reload_at)
        assert "redact.mode: 'blur' -> 'solid'" in d.output()
        _drop(work, "after-secret-name.jpg", face_jpeg)
        # The sidecar follows the image: wait for both.
        wait_for(lambda: {"after-secret-name.jpg", "after-secret-name.jpg.json"}
                 <= set(_files(work / "outbox")), 20, "second output")
        out = decode((work / "outbox" / "after-secret-name.jpg").read_bytes())
        side = json.loads((work / "outbox" / "after-secret-name.jpg.json").read_text())
        x1, y1, x2, y2 = max(side["regions"], key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        face = out[y1 + 4:y2 - 4, x1 + 4:x2 - 4].reshape(-1, 3).mean(axis=0)
        assert face[0] > 230 and face[1] < 25 and face[2] > 230  # solid magenta
        assert "after-secret-name" not in d.output()  # hide_filenames applied live
        cfg.write_text(cfg.read_text() + "\n[redact]\nnot_a_key = 1\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "keeping the running configuration" in d.output(), 20, "bad reload")
        _drop(work, "still.jpg", face_jpeg)
        wait_for(lambda: "still.jpg" in _outputs(work), 20, "output after a bad reload")
        assert d.proc.poll() is None
        assert d.stop() == 0


def test_sigterm_finishes_work_in_progress_and_exits_0(
        work: Path, astronaut_rgb: np.ndarray) -> None:
    cfg = _config(work)
    big = jpeg(astronaut_rgb, size=(1536, 1536))
    names = {f"t{i:02d}.jpg" for i in range(30)}
    with running(["--config", str(cfg)], workdir=work) as d:
        for name in sorted(names):
            _drop(work, name, big)
        wait_for(lambda: len(_outputs(work)) >= 2, 30, "some outputs")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.proc.wait(30 * PATIENCE) == 0
        assert time.monotonic() - t0 < 10 * PATIENCE  # `waiting` below: not the whole queue
        d.notify.wait("STOPPING=1")
        done, waiting = set(_outputs(work)), set(_pending(work / "inbox"))
        assert done | waiting == names and not done & waiting
        assert waiting  # queued work stays in the spool for the next start
        assert _files(work / "journal") == {}
        assert not [k for k in _files(work / "outbox") if k.startswith(".")]
    with running(["--config", str(cfg)], workdir=work) as d:
        wait_for(lambda: set(_outputs(work)) == names and not _pending(work / "inbox"), 60,
                 "the rest after a restart")
        assert d.stop() == 0


def test_watchdog_pings_stop_while_a_worker_hangs(work: Path, face_jpeg: bytes) -> None:
    cfg = _config(work, stuck_s=1.5, drain_s=1.0)
    env = {"WATCHDOG_USEC": "1000000"}
    with running(["--config", str(cfg)], workdir=work, env=env, entry=hang_on("hang-me")) as d:
        d.notify.wait("WATCHDOG=1", after=time.monotonic())
        _drop(work, "hang-me.jpg", face_jpeg)
        wait_for(lambda: "stuck on hang-me.jpg" in d.output(), 10, f"stuck\n{d.output()}")
        # A mark of our own through the same socket, once the line is logged: datagrams
        # are received in order, so every ping sent before the line comes before the mark
        # however late the listener reads them; a ping after the mark came after the line.
        mark = "X-EDGEGUARD-TEST=stuck"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(mark.encode(), str(d.notify.path))
        d.notify.wait(mark)
        stuck_at = d.notify.lines(mark)[0][0]
        _drop(work, "fine.jpg", face_jpeg)  # the other worker keeps going
        wait_for(lambda: "fine.jpg" in _outputs(work), 20, "the healthy worker")
        time.sleep(max(0.0, stuck_at + 2.5 - time.monotonic()))
        received = [m for _, m in d.notify.lines()]
        pings_after = [m for m in received[received.index(mark):] if m == "WATCHDOG=1"]
        assert pings_after == []  # systemd would now restart the service
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        code = d.proc.wait(10 * PATIENCE)
        # The hang is endless: drain_s (1 s) ended the wait for the hung worker.
        assert time.monotonic() - t0 < 5 * PATIENCE
        assert code == 1
        # Not lost: in the spool, redone at the next start.
        assert (spool_for(work / "inbox") / "hang-me.jpg").exists()


def test_a_file_the_daemon_keeps_dying_on_ends_in_failed(work: Path, face_jpeg: bytes) -> None:
    # A file that hangs a worker every time: under systemd the watchdog kills the service
    # each time (here: kill -9). Without the guard it would be taken again at every start.
    cfg = _config(work, max_attempts=2, stuck_s=1.0)
    env = {"WATCHDOG_USEC": "1000000"}
    _drop(work, "poison.jpg", face_jpeg)
    for _ in range(2):
        d = start_daemon(["--config", str(cfg)], workdir=work, env=env, entry=hang_on("poison"))
        try:
            wait_for(lambda d=d: "stuck on poison.jpg" in d.output(), 30,  # type: ignore[misc]
                     f"the worker to hang\n{d.output()}")
        finally:
            d.kill9()
            d.notify.close()
    assert (spool_for(work / "inbox") / "poison.jpg").exists()
    with running(["--config", str(cfg)], workdir=work, env=env,
                 entry=hang_on("poison")) as d:
        _drop(work, "fine.jpg", face_jpeg)
        wait_for(lambda: "fine.jpg" in _outputs(work)
                 and (work / "failed" / "poison.jpg.reason").exists(), 30,
                 f"poison.jpg to be failed\n{d.output()}")
        assert d.stop() == 0  # nothing hung this time: the file was not tried again
    assert "stopped 2 times" in (work / "failed" / "poison.jpg.reason").read_text()
    assert "poison.jpg" not in _outputs(work)
    assert "poison.jpg" not in _pending(work / "inbox")


# -- start-up checks --------------------------------------------------------------------------


def _disk_dir(tmp_path: Path) -> Path:
    for candidate in (tmp_path, REPO / ".cache"):
        candidate.mkdir(parents=True, exist_ok=True)
        if not mounts.is_tmpfs(candidate):
            return candidate
    skip_or_fail("no disk-backed folder to test with")
    raise AssertionError("unreachable")


def test_an_inbox_on_disk_is_refused_with_one_line(work: Path, tmp_path: Path) -> None:
    disk = _disk_dir(tmp_path) / f"disk-inbox-{os.getpid()}"
    try:
        args = ["--inbox", str(disk / "inbox"), "--outbox", str(work / "outbox")]
        d = start_daemon(args, workdir=work)
        try:
            code = d.proc.wait(30 * PATIENCE)
            text = d.output().strip()
        finally:
            d.notify.close()
        assert code != 0
        assert len(text.splitlines()) == 1, text
        assert "not on tmpfs" in text and str(disk / "inbox") in text
        assert d.notify.lines("READY=1") == []
        check = subprocess.run([sys.executable, "-m", "edgeguard", "check", *args], cwd=REPO,
                               capture_output=True, text=True, check=False)
        assert check.returncode == 1
        assert any(line.startswith("FAIL inbox") for line in check.stdout.splitlines())
        assert any(line.startswith("ok   models") for line in check.stdout.splitlines())
    finally:
        shutil.rmtree(disk, ignore_errors=True)


def test_check_reports_every_check(work: Path) -> None:
    cfg = _config(work)
    proc = subprocess.run([sys.executable, "-m", "edgeguard", "check", "--config", str(cfg)],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * len(lines)
    assert {line.split()[1].rstrip(":") for line in lines} >= {
        "config", "inbox", "failed", "runtime", "same-fs", "outbox", "models"}


def test_check_creates_nothing_and_takes_the_camera_flag(work: Path, tmp_path: Path) -> None:
    """`edgeguard check` looks only: no folder appears (not ./outbox in the current folder,
    not the inbox), missing folders are checked where the daemon would make them, and
    --camera is taken as `run` takes it."""
    cfg = _config(work, inbox=str(work / "new" / "inbox"), failed=str(work / "new" / "failed"),
                  outbox=str(tmp_path / "out" / "outbox"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def check(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgeguard", "check", "--config", str(cfg),
                               *extra], cwd=cwd, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    proc = check("--camera", "none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "created at start, in " + str(work) in proc.stdout, proc.stdout
    assert "created at start, in " + str(tmp_path) in proc.stdout, proc.stdout
    assert not (work / "new").exists() and not (tmp_path / "out").exists()
    assert list(cwd.iterdir()) == []
    bad = check("--camera", "webcam-please")
    assert bad.returncode == 1, bad.stdout
    assert bad.stdout.startswith("FAIL config: command line: camera.source"), bad.stdout
    assert "Traceback" not in bad.stderr
    # --config-only (the unit's ExecReload): the config alone, nothing else looked at.
    only = check("--config-only")
    assert only.returncode == 0 and only.stdout.splitlines() == [
        f"ok   config: {cfg} is valid"], only.stdout
    cfg.write_text("[daemon]\nworkers = 0\n")
    broken = check("--config-only")
    assert broken.returncode == 1 and broken.stdout.startswith("FAIL config:"), broken.stdout


def test_two_daemons_cannot_share_an_inbox(work: Path) -> None:
    cfg = _config(work)
    with running(["--config", str(cfg)], workdir=work):
        second: Daemon = start_daemon(["--config", str(cfg)], workdir=work)
        try:
            assert second.proc.wait(30 * PATIENCE) != 0
            assert "another edgeguard daemon" in second.output()
        finally:
            second.notify.close()
