"""Fault injection against the real daemon: kill -9 in every step, full and read-only
file systems, a full tmpfs, models changed under it, a camera source that vanishes.

After each fault: nothing partial or raw is visible in the outbox, every input ends as
exactly one output or one failure (inputs = outputs + failures), and the daemon either
goes on or stops with one clear line. The daemon is ``python -m edgeguard run`` with the
real pipeline on /dev/shm; kills at chosen steps go through helpers/killpoints.py, which
wraps the same CLI. What test_daemon_system.py already covers is not repeated here: random
kills on one image size, the outbox full or read-only while running.

Decision, model files (documented in docs/reliability.md): the interpreter is built once
at start-up from the verified file and keeps working when the file is altered, truncated
or removed under it (the runtime maps the file, but the XNNPACK delegate packs every
weight at start); the next start refuses, with one line, until `edgeguard models fetch`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.appliance import (
    cleanup,
    config_file,
    drop,
    failures,
    files,
    outputs,
    pending,
    reason,
    temporaries,
)
from helpers.daemon import (
    PATIENCE,
    REPO,
    Daemon,
    mount_tmpfs,
    remount,
    require_models,
    running,
    shm_dir,
    skip_or_fail,
    start_daemon,
    wait_for,
)
from helpers.hostile import face_destroyed, save
from helpers.images import decode
from PIL import Image

from edgeguard import config, models
from edgeguard.daemon import Daemon as DaemonCore
from edgeguard.errors import InputError
from edgeguard.pipeline import Redacted
from edgeguard.sinks.journal import RESERVE_BYTES, Journal
from edgeguard.startup import Paths

KILLPOINTS = [str(REPO / "tests" / "helpers" / "killpoints.py")]
STEPS = ("decode", "detect", "encode", "write", "rename", "renamed", "deleted", "fail")


@pytest.fixture(scope="module")
def models_present() -> None:
    require_models()


@pytest.fixture
def work(models_present: None) -> Iterator[Path]:
    root = shm_dir()
    yield root
    cleanup(root)


@pytest.fixture(scope="module")
def faces(astronaut_rgb: np.ndarray) -> dict[int, bytes]:
    """The astronaut as a JPEG, by side in pixels."""
    return {s: save(Image.fromarray(cv2.resize(astronaut_rgb, (s, s))), "JPEG", quality=90)
            for s in (192, 256, 384, 768, 1536, 3000)}


def _bad(i: int) -> bytes:
    return b"not an image %d " % i + os.urandom(300)


def _settle_and_check(work: Path, good: dict[str, bytes], bad: dict[str, bytes],
                      cfg: Path) -> Daemon | None:
    """Start a clean daemon, let it drain the inbox, stop it; then the accounting."""
    with running(["--config", str(cfg)], workdir=work) as d:
        wait_for(lambda: not pending(work / "inbox") and not files(work / "journal"), 120,
                 f"the inbox to drain\n{d.output()[-3000:]}")
        assert d.stop() == 0
    _check_accounting(work, good, bad)
    return None


def _check_accounting(work: Path, good: dict[str, bytes], bad: dict[str, bytes]) -> None:
    outs = outputs(work / "outbox")
    # Every good input exactly once, under its own name: no "-1" duplicate from a redo.
    assert set(outs) == {n.encode() for n in good}
    sidecars = {k for k in files(work / "outbox") if k.endswith(b".json")}
    assert sidecars == {n.encode() + b".json" for n in good}
    assert temporaries(work / "outbox") == []
    # Every bad input exactly once in failed/ (by content: a redo after a crash between
    # the reason and the move takes the next free name).
    fails = failures(work / "failed")
    held = collections.Counter(hashlib.sha256(p.read_bytes()).digest() for p in fails.values())
    assert held == collections.Counter(hashlib.sha256(b).digest() for b in bad.values())
    for rel in fails:
        assert reason(work / "failed", rel).startswith("not an image")
    for name, path in outs.items():
        raw = decode(good[name.decode()])
        change, detail = face_destroyed(raw, decode(path.read_bytes()))
        assert change > 12 and detail < 0.5, (name, change, detail)


def _post_mortem(work: Path) -> dict[str, object]:
    """What a kill left on disk, before any restart recovers it."""
    journal = [json.loads(p.read_bytes()) for k, p in files(work / "journal").items()
               if k.endswith(b".json")]
    for rec in journal:  # what each record's files look like now
        for key in ("tmp", "final", "inbox"):
            rec[f"{key}_exists"] = bool(rec[key]) and os.path.lexists(rec[key])
    visible = outputs(work / "outbox")
    for path in visible.values():
        decode(path.read_bytes())  # a visible output is always complete
    fails = files(work / "failed")
    return {
        "phases": sorted(r["phase"] for r in journal),
        "records": journal,
        "temporaries": temporaries(work / "outbox"),
        "orphan_reasons": [k for k in fails if k.endswith(b".reason")
                           and k[: -len(b".reason")] not in fails],
        "outputs": set(visible),
        "inbox": set(pending(work / "inbox")),
    }


# -- kill -9 -----------------------------------------------------------------------------------


@pytest.mark.system
def test_kill_9_in_every_step_of_an_item_loses_nothing(work: Path,
                                                       faces: dict[int, bytes]) -> None:
    # One worker: the step is the only one. Each run dies on the first file it takes, so the
    # same file can be in hand at several deaths: the poison-file guard is lifted here.
    cfg = config_file(work, stable_s=0.2, workers=1, max_attempts=1000)
    good: dict[str, bytes] = {}
    bad: dict[str, bytes] = {}
    seen: dict[str, dict[str, object]] = {}
    for i, step in enumerate(STEPS):
        for j, side in enumerate((192, 256, 384)):
            good[f"s{i}-{j}.jpg"] = faces[side]
            drop(work, f"s{i}-{j}.jpg", faces[side])
        bad[f"s{i}-bad.jpg"] = _bad(i)
        drop(work, f"s{i}-bad.jpg", bad[f"s{i}-bad.jpg"])
        # The first or the second time the step is reached (a failure: the first).
        env = {"EDGEGUARD_TEST_KILL_AT": f"{step}:{1 if step == 'fail' else 1 + i % 2}"}
        d = start_daemon(["--config", str(cfg)], workdir=work, env=env, entry=KILLPOINTS)
        try:
            code = d.proc.wait(60 * PATIENCE)
        finally:
            d.kill9()
            d.notify.close()
        assert code == -signal.SIGKILL, f"{step}: exit {code}\n{d.output()[-2000:]}"
        seen[step] = _post_mortem(work)
    # Each kill landed where it was aimed: the state on disk shows it.
    assert seen["write"]["phases"] == ["writing"] and len(seen["write"]["temporaries"]) == 1
    rec = seen["rename"]["records"][0]  # type: ignore[index]
    assert seen["rename"]["phases"] == ["publishing"] and rec["tmp_exists"]
    assert not rec["final_exists"]
    rec = seen["renamed"]["records"][0]  # type: ignore[index]
    assert seen["renamed"]["phases"] == ["publishing"] and rec["final_exists"]
    assert not rec["tmp_exists"] and rec["inbox_exists"]  # published, input still there
    rec = seen["deleted"]["records"][0]  # type: ignore[index]
    assert not rec["inbox_exists"] and rec["final_exists"]  # deleted, record still there
    assert seen["fail"]["orphan_reasons"]  # a reason without its raw file yet
    for step in ("decode", "detect", "encode"):
        assert seen[step]["phases"] == [] and seen[step]["temporaries"] == [], step
    _settle_and_check(work, good, bad, cfg)


@pytest.mark.system
def test_kill_9_at_random_moments_with_images_of_every_size(work: Path,
                                                            faces: dict[int, bytes]) -> None:
    # Repeated random kills look like a poison file to the guard: lifted here.
    cfg = config_file(work, stable_s=0.2, max_attempts=1000)
    rng = random.Random(11)
    phase_log = work / "phases.log"
    good: dict[str, bytes] = {}
    bad: dict[str, bytes] = {}
    landed: collections.Counter[str] = collections.Counter()
    sides = sorted(faces)
    for round_ in range(8):
        for j in range(5):
            side = sides[(round_ + j) % len(sides)]
            good[f"r{round_}-{j}-{side}.jpg"] = faces[side]
            drop(work, f"r{round_}-{j}-{side}.jpg", faces[side])
        bad[f"r{round_}-bad.jpg"] = _bad(round_)
        drop(work, f"r{round_}-bad.jpg", bad[f"r{round_}-bad.jpg"])
        phase_log.write_bytes(b"")
        d = start_daemon(["--config", str(cfg)], workdir=work, entry=KILLPOINTS,
                         env={"EDGEGUARD_TEST_PHASE_LOG": str(phase_log)})
        # Kill once the workers have entered a random number of steps, a random moment
        # later: the kill lands inside a step, whichever the machine's speed.
        k = rng.randint(1, 30)

        def steps_entered(k: int = k, d: Daemon = d) -> bool:
            lines = phase_log.read_bytes().count(b"edgeguard-worker")
            return lines >= k or d.proc.poll() is not None or not pending(work / "inbox")

        try:
            wait_for(steps_entered, 60, f"{k} steps")
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            d.kill9()
            d.notify.close()
        last: dict[str, str] = {}
        for line in phase_log.read_text().splitlines():
            thread, step = line.split()
            if thread.startswith("edgeguard-worker"):
                last[thread] = step
        # "deleted" and "fail" end an item: a worker whose last step was one is between items.
        landed.update("between items" if s in ("deleted", "fail") else s
                      for s in last.values())
        _post_mortem(work)  # whatever the moment: nothing partial is visible
    print(f"\nrandom kills landed in: {dict(landed)}")
    _settle_and_check(work, good, bad, cfg)


# -- file systems ------------------------------------------------------------------------------


def _fill(folder: Path, data: bytes, prefix: str) -> tuple[list[str], list[str]]:
    """Write copies of ``data`` into ``folder`` until the file system is full, as a client
    would (the copy that meets ENOSPC is left cut short). Returns (complete, cut) names."""
    complete: list[str] = []
    for i in range(100_000):
        name = f"{prefix}{i:04d}.jpg"
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            if os.fstat(fd).st_size == 0:
                (folder / name).unlink()
                return complete, []
            return complete, [name]
        finally:
            os.close(fd)
        complete.append(name)
    raise AssertionError("the file system never filled")


@pytest.mark.system
def test_a_full_tmpfs_neither_wedges_the_daemon_nor_loses_a_file(
        work: Path, faces: dict[int, bytes]) -> None:
    """The inbox, failed/ and the journal share one small tmpfs, filled to the last byte."""
    small = work / "small"
    mount_tmpfs(small, "1536k")
    cfg = config_file(work, inbox=str(small / "inbox"), failed=str(small / "failed"),
                      runtime_dir=str(small), retry_max_s=2.0)
    inbox = small / "inbox"
    with running(["--config", str(cfg)], workdir=work) as d:
        assert (small / "journal.reserve").stat().st_size == RESERVE_BYTES
        # 1. Raw images fill it (the client's last copy fails half way).
        os.kill(d.pid, signal.SIGSTOP)
        try:
            names, cut = _fill(inbox, faces[256], "full-")
        finally:
            os.kill(d.pid, signal.SIGCONT)
        wait_for(lambda: not pending(inbox), 60, f"the full inbox to drain\n{d.output()[-3000:]}")
        assert set(outputs(work / "outbox")) == {n.encode() for n in names}
        assert set(failures(small / "failed")) == {n.encode() for n in cut}
        assert "using the reserve" in d.output()
        # 2. Files that all fail fill it: failed/ is full too; they still move there,
        # each with its reason in the log (and beside it while there was room).
        os.kill(d.pid, signal.SIGSTOP)
        try:
            junk, junk_cut = _fill(inbox, b"JUNK" * 10_000, "junk-")
            junk += junk_cut
        finally:
            os.kill(d.pid, signal.SIGCONT)
        wait_for(lambda: not pending(inbox), 60, f"the junk to be failed\n{d.output()[-3000:]}")
        assert set(failures(small / "failed")) == {n.encode() for n in [*cut, *junk]}
        # Each line is logged just after its file left the inbox.
        wait_for(lambda: all(f"{name} moved to {small / 'failed' / name}: not an image"
                             in d.output()
                             for name in junk), 10, f"a line per junk file\n{d.output()[-3000:]}")
        assert "no space left for a .reason file" in d.output()
        assert d.proc.poll() is None
        # 3. Room again (failed/ emptied, as its bounds would): work goes on.
        for path in files(small / "failed").values():
            path.unlink()
        (inbox / "after.jpg").write_bytes(faces[256])
        wait_for(lambda: b"after.jpg" in outputs(work / "outbox"), 30, "work after the fault")
        assert d.output().count("cannot write the state file") <= 2  # once per outage
        assert d.stop() == 0
    assert temporaries(work / "outbox") == [] and files(small / "journal") == {}


def _one_line_failure(args: list[str], work: Path, needle: str) -> None:
    d = start_daemon(args, workdir=work)
    try:
        code = d.proc.wait(60 * PATIENCE)
        text = d.output().strip()
    finally:
        d.notify.close()
    assert code != 0 and d.notify.lines("READY=1") == []
    assert len(text.splitlines()) == 1 and needle in text, text


@pytest.mark.system
def test_an_outbox_that_is_full_or_read_only_at_start_is_one_clear_line(work: Path) -> None:
    outbox = work / "outbox"
    mount_tmpfs(outbox, "64k")
    cfg = config_file(work)
    with (outbox / "filler").open("wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * 128 * 1024)  # fills it: ENOSPC half way
    _one_line_failure(["--config", str(cfg)], work, "no space left")
    (outbox / "filler").unlink()
    remount(outbox, "ro")
    _one_line_failure(["--config", str(cfg)], work, "read-only")
    check = subprocess.run([sys.executable, "-m", "edgeguard", "check", "--config", str(cfg)],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert check.returncode == 1
    assert [ln for ln in check.stdout.splitlines() if ln.startswith("FAIL")] == [
        ln for ln in check.stdout.splitlines() if ln.startswith("FAIL outbox")]


@pytest.mark.system
def test_folders_removed_under_the_daemon(work: Path, faces: dict[int, bytes]) -> None:
    """The outbox removed: it is made again with the next output. The inbox removed (no
    watch left): the daemon exits 1 with one clear line, and systemd's restart goes on."""
    cfg = config_file(work)
    with running(["--config", str(cfg)], workdir=work) as d:
        shutil.rmtree(work / "outbox")
        drop(work, "first.jpg", faces[256])
        wait_for(lambda: b"first.jpg" in outputs(work / "outbox"), 30, "the outbox again")
        shutil.rmtree(work / "inbox")
        assert d.proc.wait(30) == 1
        assert "the inbox watcher stopped; exiting so systemd restarts us" in d.output()
    with running(["--config", str(cfg)], workdir=work) as d:
        drop(work, "second.jpg", faces[256])
        wait_for(lambda: b"second.jpg" in outputs(work / "outbox"), 30, "work after a restart")
        assert d.stop() == 0


# -- models ------------------------------------------------------------------------------------


@pytest.mark.system
def test_a_model_changed_under_the_daemon(work: Path, faces: dict[int, bytes]) -> None:
    mdir = work / "models"
    mdir.mkdir()
    src = models.default_models_dir()
    for spec in models.load_manifest().models.values():
        (mdir / spec.file).write_bytes((src / spec.file).read_bytes())
    full = mdir / models.load_manifest().models["full"].file
    cfg = config_file(work, extra=f'[detect]\nmodels_dir = "{mdir}"')
    with running(["--config", str(cfg)], workdir=work) as d:
        drop(work, "before.jpg", faces[384])
        wait_for(lambda: b"before.jpg" in outputs(work / "outbox"), 30, "a first output")
        size = full.stat().st_size
        with full.open("r+b") as fh:  # altered in place: the bytes the runtime mapped
            fh.write(os.urandom(size))
        drop(work, "altered.jpg", faces[384])
        wait_for(lambda: b"altered.jpg" in outputs(work / "outbox"), 30, "after altering")
        full.write_bytes(b"")  # truncated in place
        drop(work, "truncated.jpg", faces[384])
        wait_for(lambda: b"truncated.jpg" in outputs(work / "outbox"), 30, "after truncating")
        full.unlink()
        drop(work, "removed.jpg", faces[384])
        wait_for(lambda: b"removed.jpg" in outputs(work / "outbox"), 30, "after removing")
        assert d.stop() == 0
    raw = decode(faces[384])
    for name in ("before.jpg", "altered.jpg", "truncated.jpg", "removed.jpg"):
        out = decode((work / "outbox" / name).read_bytes())
        change, detail = face_destroyed(raw, out)
        assert change > 12 and detail < 0.5, (name, change, detail)
        side = json.loads((work / "outbox" / f"{name}.json").read_text())
        assert side["faces"] >= 1
    # The next start, and the check, refuse with one line until the model is fetched.
    _one_line_failure(["--config", str(cfg)], work, f"model full missing: {full}")
    full.write_bytes(b"\0" * 1000)
    _one_line_failure(["--config", str(cfg)], work, "model full altered")
    check = subprocess.run([sys.executable, "-m", "edgeguard", "check", "--config", str(cfg)],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert check.returncode == 1
    assert any(ln.startswith("FAIL models: model full altered")
               for ln in check.stdout.splitlines())


# -- the per-item boundary (fast: the daemon in this process, a stand-in pipeline) -------------


class _Junk:
    def redact_file(self, path: Path) -> Redacted:
        raise InputError("not an image (test)")

    def with_config(self, cfg: config.Config) -> _Junk:
        return self


class _BrokenFailedSink:
    def __init__(self) -> None:
        self.calls = 0

    def record(self, source: Path, rel: Path, reason: str) -> None:
        self.calls += 1
        raise RuntimeError("a bug while recording a failure")

    def prune(self) -> int:
        return 0


def test_a_bug_while_recording_a_failure_does_not_kill_the_worker(tmp_path: Path) -> None:
    paths = Paths(inbox=tmp_path / "run" / "inbox", outbox=tmp_path / "outbox",
                  failed=tmp_path / "run" / "failed", runtime=tmp_path / "run")
    for p in (paths.inbox, paths.outbox, paths.failed):
        p.mkdir(parents=True)
    cfg = config.from_dict({"daemon": {"stable_s": 0.1, "workers": 1}})
    daemon = DaemonCore(cfg, paths, _Junk(), notify=lambda m: True)
    sink = _BrokenFailedSink()
    daemon.failed = daemon.ends.failed = sink  # type: ignore[assignment]
    (paths.inbox / "a.jpg").write_bytes(b"junk")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    t.start()
    try:
        wait_for(lambda: sink.calls >= 2, 10, "two attempts to record the failure")
        (paths.inbox / "b.jpg").write_bytes(b"junk")
        wait_for(lambda: sink.calls >= 4, 10, "the worker to take the next file")
        assert all(s.thread is not None and s.thread.is_alive() for s in daemon.workers.slots)
        assert (paths.spool / "a.jpg").exists()  # kept (claimed) for a later pass, not lost
    finally:
        daemon.stop()
        t.join(10 * PATIENCE)
    assert result == [0]


def test_the_journal_gives_up_its_reserve_when_the_tmpfs_is_full(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    from edgeguard.sinks import journal as journal_mod

    reserve = tmp_path / "journal.reserve"
    j = Journal(tmp_path / "journal", reserve=reserve)
    j.open()
    assert reserve.stat().st_size == RESERVE_BYTES
    real = journal_mod.replace_file
    full = [True]

    def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        if full[0] and reserve.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, mode=mode)

    monkeypatch.setattr(journal_mod, "replace_file", replace_file)
    rec = j.begin(inbox=tmp_path / "in.jpg",
                  identity=journal_mod.Identity(1, 2, 3, 4), tmp=tmp_path / "t")
    assert not reserve.exists() and j.records() == [rec]
    full[0] = False
    j.drop(rec)  # room again: the reserve is made again
    assert reserve.stat().st_size == RESERVE_BYTES and j.records() == []
    # Without a reserve left, "no space" is the caller's (an outbox outage: retried).
    full[0] = True
    reserve.unlink()
    j2 = Journal(tmp_path / "journal2")
    j2.open()

    def always_full(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod, "replace_file", always_full)
    with pytest.raises(OSError):
        j2.begin(inbox=tmp_path / "in.jpg", identity=journal_mod.Identity(1, 2, 3, 4),
                 tmp=tmp_path / "t")


# -- the camera source vanishing ---------------------------------------------------------------


def _daemon_runs_cameras() -> bool:
    import inspect

    return "camera" in inspect.signature(DaemonCore.__init__).parameters


@pytest.mark.system
@pytest.mark.parametrize("require", [False, True])
def test_the_camera_source_vanishing_mid_run(work: Path, astronaut_rgb: np.ndarray,
                                             faces: dict[int, bytes], require: bool) -> None:
    """A `file:` camera whose folder disappears while it plays: the camera stops with its
    reason in the status; the inbox goes on (or, with camera.require, the daemon exits 1
    with one clear line for systemd to restart it); the video segment that was open is
    published whole and shows no raw face."""
    if not _daemon_runs_cameras():
        skip_or_fail("the daemon does not run the camera yet")
    from helpers.camera import moving_faces, read_video, similarity

    scene = moving_faces(astronaut_rgb, n=60, fps=4.0)
    frames = scene.write_images(work / "frames")  # a folder, so that it can vanish
    cfg = config_file(work, extra=f"""[camera]
source = "file:{frames}"
require = {json.dumps(require)}
fps = 4.0
video = true
segment_s = 60.0
max_frame_age_s = 30.0
""")
    state = work / "state.json"

    def camera() -> dict[str, object]:
        try:
            cam: dict[str, object] = json.loads(state.read_text()).get("camera") or {}
        except (OSError, ValueError):
            return {}
        return cam

    with running(["--config", str(cfg)], workdir=work) as d:
        wait_for(lambda: int(camera().get("written") or 0) >= 3, 60, "camera frames")
        for path in frames.iterdir():  # the source vanishes
            path.unlink()
        frames.rmdir()
        if require:
            assert d.proc.wait(30) == 1
            assert "the required camera failed" in d.output()
            assert "no such file" in d.output().lower() or "not found" in d.output().lower()
        else:
            wait_for(lambda: camera().get("state") not in (None, "running"), 30,
                     f"the camera to stop\n{d.output()[-2000:]}")
            assert camera().get("last_error"), camera()
            drop(work, "after-camera.jpg", faces[384])  # the inbox goes on
            wait_for(lambda: b"after-camera.jpg" in outputs(work / "outbox"), 30,
                     "an inbox output after the camera failed")
            assert d.proc.poll() is None
            assert d.stop() == 0
    names = sorted(p.name for p in (work / "outbox").iterdir())
    assert temporaries(work / "outbox") == [], names
    videos = [work / "outbox" / n for n in names if n.endswith((".mp4", ".mkv"))]
    assert len(videos) == 1, names
    shown = read_video(videos[0])
    assert 3 <= len(shown) < 60
    for i, out in enumerate(shown):  # which source frame a slot shows depends on pacing
        assert all(similarity(out, scene.frames[j], box) < 0.6
                   for j in range(len(scene.frames)) for box in scene.faces[j]), i


# -- memory: one small file must not get the service killed, again and again -----------------


def test_memory_limit_reads_meminfo_and_every_cgroup_level(tmp_path: Path) -> None:
    from edgeguard.startup import memory_limit

    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:         426000 kB\nMemFree: 1 kB\n")
    (proc / "self" / "cgroup").write_text("0::/system.slice/edgeguard.service\n")
    unit = root / "system.slice" / "edgeguard.service"
    unit.mkdir(parents=True)
    (unit / "memory.max").write_text("max\n")
    assert memory_limit(proc, root) == 426000 * 1024  # no cgroup limit: MemTotal
    (unit / "memory.max").write_text(f"{300 * 2**20}\n")  # MemoryMax=
    (root / "system.slice" / "memory.max").write_text(f"{200 * 2**20}\n")  # a parent's
    assert memory_limit(proc, root) == 200 * 2**20
    (proc / "self" / "cgroup").write_text("4:memory:/app\n0::/\n")  # cgroup v1
    (root / "memory" / "app").mkdir(parents=True)
    (root / "memory" / "app" / "memory.limit_in_bytes").write_text(f"{100 * 2**20}\n")
    assert memory_limit(proc, root) == 100 * 2**20
    assert memory_limit(tmp_path / "nothing", root) is None


def test_max_pixels_is_lowered_to_what_the_workers_fit_in_memory(
        caplog: pytest.LogCaptureFixture) -> None:
    from edgeguard.startup import (
        BASE_BYTES,
        BYTES_PER_PIXEL,
        SECOND_MODEL_BYTES,
        fit_to_memory,
    )

    cfg = config.from_dict({"detect": {"profile": "fast"}})  # BlazeFace alone; 64 MP, 2 workers
    assert fit_to_memory(cfg, limit=8 * 2**30) == cfg  # a Pi 4 with 8 GB: as configured
    zero2w = 333 * 2**20  # a Pi Zero 2 W: 416 MB, MemoryMax=80%
    fitted = fit_to_memory(cfg, limit=zero2w)
    mp = fitted.input.max_pixels
    assert BASE_BYTES + 2 * mp * BYTES_PER_PIXEL <= zero2w < BASE_BYTES + 2 * (mp + 1) * 8
    assert "images above 11.3 MP are refused" in caplog.text
    one = config.from_dict({"detect": {"profile": "fast"}, "daemon": {"workers": 1}})
    assert fit_to_memory(one, limit=zero2w).input.max_pixels == 2 * mp
    # The default profile runs CenterFace too: its working set comes first.
    both = fit_to_memory(config.from_dict({}), limit=zero2w).input.max_pixels
    fixed = BASE_BYTES + SECOND_MODEL_BYTES
    assert fixed + 2 * both * BYTES_PER_PIXEL <= zero2w < fixed + 2 * (both + 1) * 8
    assert "images above 5.0 MP are refused" in caplog.text


def _memory_cgroup(limit: int) -> Path:
    """A fresh memory cgroup limited to ``limit`` bytes (v1 or v2); skip when we cannot."""
    if os.geteuid() != 0:
        skip_or_fail("a memory cgroup needs root")
    name = f"edgeguard-test-{os.getpid()}-{random.randrange(10**6)}"
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup")
    try:
        if (v1 / "memory.limit_in_bytes").exists():
            group = v1 / name
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(limit))
            return group
        if "memory" in (v2 / "cgroup.controllers").read_text().split():
            group = v2 / name
            group.mkdir()
            (group / "memory.max").write_text(str(limit))
            return group
    except OSError as exc:
        skip_or_fail(f"cannot make a memory cgroup: {exc}")
    skip_or_fail("no memory cgroup controller here")
    raise AssertionError("unreachable")


@pytest.mark.system
def test_a_small_file_that_decodes_past_the_memory_is_refused_not_fatal(
        work: Path, faces: dict[int, bytes]) -> None:
    """A 60 KB PNG that decodes to 64 MP (512 MB through the pipeline) under a 400 MB
    limit, as on a Pi Zero 2 W: without the fit, the kernel kills the daemon for memory,
    systemd restarts it, it takes the same file again: for good."""
    from helpers.hostile import png_zero_bomb

    group = _memory_cgroup(400 * 2**20)
    cfg = config_file(work)
    try:
        with running(["--config", str(cfg)], workdir=work, entry=KILLPOINTS,
                     env={"EDGEGUARD_TEST_CGROUP": str(group)}) as d:
            assert "images above" in d.output()  # said at start
            drop(work, "zero-64mp.png", png_zero_bomb(8000, 8000))
            drop(work, "face.jpg", faces[768])
            wait_for(lambda: not pending(work / "inbox") or d.proc.poll() is not None, 60,
                     f"both files\n{d.output()[-2000:]}")
            assert d.proc.poll() is None, f"killed: {d.proc.returncode}\n{d.output()[-2000:]}"
            assert reason(work / "failed", b"zero-64mp.png").startswith(
                "image is 8000x8000 (64 MP), above the")
            assert b"face.jpg" in outputs(work / "outbox")
            assert d.stop() == 0
    finally:
        for _ in range(50):  # the cgroup goes once its last process has
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
