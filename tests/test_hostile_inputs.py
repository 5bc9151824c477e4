"""The hostile-input corpus through the real daemon: nothing raw out, nothing lost, no crash.

One ``python -m edgeguard run`` (real inotify, real models, folders on /dev/shm) takes the
whole generated corpus of :mod:`helpers.hostile` plus the entries only a live inbox can
hold (links to system files, FIFOs, sockets, device nodes, folders named like images, a
file still open for writing, files deleted or replaced before the daemon reads them, a
name dropped twice). The module's tests then check the run from every side: each input
is one output or one failure with its reason, the outputs carry no raw face and no
metadata, the daemon never stopped and its memory stayed bounded.

The bugs this corpus found (see the final tests here): a bad file whose name is not UTF-8
killed a worker thread, so the daemon exited and, restarted, died on the same file again;
a 255-byte name could not take ".reason" or "-1" or ".json", which the daemon took for an
outbox outage and paused all work for good.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.appliance import (
    RssSampler,
    config_file,
    drop,
    failures,
    files,
    outputs,
    pending,
    reason,
    temporaries,
)
from helpers.daemon import require_models, running, shm_dir, wait_for
from helpers.hostile import Case, Expect, corpus, face_box, face_destroyed, save
from PIL import Image

from edgeguard import codec
from edgeguard.errors import InputError
from edgeguard.sinks.failed import REASON_SUFFIX, FailedSink
from edgeguard.sinks.fileops import NAME_MAX, fit_name
from edgeguard.sinks.outbox import OUTPUT_NAME_MAX, candidate, output_rel
from edgeguard.sources.spool import spool_for
from edgeguard.startup import BYTES_PER_PIXEL, SECOND_MODEL_BYTES

MAX_PIXELS = 16_000_000  # the corpus's config; its bombs are built around it
# The face (inner box) in an output differs from the raw one by at least this much
# (mean absolute difference, 0-255), and keeps at most this share of its detail.
FACE_MIN_CHANGE = 12.0
FACE_MAX_DETAIL = 0.5
# Tags a TIFF needs to describe its own pixels (Pillow lists them as EXIF): size, bits,
# compression, photometric, strips, resolution. Nothing else may be in an output.
TIFF_STRUCTURE = frozenset({256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296,
                            317, 338, 339})


@dataclass
class Run:
    """Everything one corpus run left behind, for the tests below to judge."""

    work: Path
    cases: list[Case]
    specials: dict[bytes, str]  # inbox entry -> what it is
    raw: dict[bytes, bytes]  # every input that was a regular file -> its bytes
    outputs: dict[bytes, bytes] = field(default_factory=dict)
    failures: dict[bytes, tuple[Path, str]] = field(default_factory=dict)
    left_in_inbox: list[bytes] = field(default_factory=list)
    log: str = ""
    exit_code: int | None = None
    pings_late: int = 0
    rss_baseline_kb: int = 0
    rss_peak_kb: int = 0
    seconds: float = 0.0
    state: dict[str, object] = field(default_factory=dict)
    dynamic: dict[str, object] = field(default_factory=dict)


def _expected_output(name: bytes, data: bytes) -> bytes:
    fmt = codec.output_format(codec.probe(data)[0], "same")
    rel = output_rel(Path(os.fsdecode(name)), fmt, codec.suffix_for(fmt))
    return os.fsencode(candidate(rel, 0))


def _expected_failure(name: bytes) -> bytes:
    p = Path(os.fsdecode(name))
    return os.fsencode(fit_name(p.stem, p.suffix, NAME_MAX - len(REASON_SUFFIX)))


def _make_specials(work: Path, inbox: Path, face: bytes) -> dict[bytes, str]:
    staging = work / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "secret-face.jpg").write_bytes(face)
    made: dict[bytes, str] = {}
    for name, target in (("link-shadow.jpg", "/etc/shadow"), ("link-etc.png", "/etc"),
                         ("link-zero.jpg", "/dev/zero"), ("link-dangling.jpg", "/nonexistent"),
                         ("link-face.jpg", str(staging / "secret-face.jpg")),
                         ("link-relative.jpg", "../staging/secret-face.jpg")):
        (inbox / name).symlink_to(target)
        made[name.encode()] = "symbolic link"
    os.mkfifo(inbox / "fifo.jpg")
    made[b"fifo.jpg"] = "FIFO"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(inbox / "socket.jpg"))
    sock.close()  # the socket file stays
    made[b"socket.jpg"] = "socket"
    if os.geteuid() == 0:
        os.mknod(inbox / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        made[b"device.jpg"] = "device node"
    (inbox / "folder.jpg").mkdir()  # empty, named like an image
    drop(work, "album.png/inside.jpg", face)  # a folder named like an image, with an image
    drop(work, "d1/d2/d3/deep.jpg", face)
    (staging / "hardlink-source.jpg").write_bytes(face)
    os.link(staging / "hardlink-source.jpg", inbox / "hardlink.jpg")  # appears, no close
    for rel in (b"album.png/inside.jpg", b"d1/d2/d3/deep.jpg", b"hardlink.jpg"):
        made[rel] = "regular file"
    return made


@pytest.fixture(scope="module")
def run(astronaut_rgb: np.ndarray) -> Iterator[Run]:
    require_models()
    work = shm_dir()
    try:
        yield _corpus_run(work, astronaut_rgb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _corpus_run(work: Path, rgb: np.ndarray) -> Run:
    cases = corpus(rgb, max_pixels=MAX_PIXELS)
    inbox = work / "inbox"
    cfg = config_file(work, failed_max_count=100_000, rescan_s=5.0,
                      extra=f"[input]\nmax_pixels = {MAX_PIXELS}")
    face = save(Image.fromarray(cv2.resize(rgb, (256, 256))), "JPEG", quality=90)
    env = {"WATCHDOG_USEC": "2000000"}
    t0 = time.monotonic()
    with running(["--config", str(cfg)], workdir=work, env=env) as d:
        sampler = RssSampler(d)
        r = Run(work, cases, {}, {})
        for case in cases:
            drop(work, case.name, case.data)
            r.raw[case.fs_name] = case.data
        r.specials = _make_specials(work, inbox, face)
        for name in (b"album.png/inside.jpg", b"d1/d2/d3/deep.jpg", b"hardlink.jpg"):
            r.raw[name] = face
        # A writer that keeps its file open (half written) for the whole run.
        writer = (inbox / "being-written.jpg").open("wb")
        writer.write(face[: len(face) // 2])
        writer.flush()
        # A writer that died half way: its file was closed short.
        (inbox / "writer-died.jpg").write_bytes(face[: len(face) // 2])
        r.raw[b"writer-died.jpg"] = face[: len(face) // 2]
        taken = len(r.raw) + sum(1 for k in r.specials.values() if k != "regular file")

        def settled() -> bool:
            if d.proc.poll() is not None:
                raise AssertionError(f"the daemon exited ({d.proc.returncode}):\n"
                                     f"{d.output()[-3000:]}")
            return len(outputs(work / "outbox")) + len(failures(work / "failed")) >= taken

        # An output is published a moment before its input leaves the spool: wait for that
        # too (the open writer's file must stay, and is checked below).
        wait_for(lambda: settled() and set(pending(inbox)) <= {b"being-written.jpg"}, 240,
                 f"{taken} inputs to be settled\n{d.output()[-3000:]}")
        # Claimed into the private spool while open, and left alone there until closed.
        r.dynamic["open_writer_untouched"] = (
            set(pending(inbox)) == {b"being-written.jpg"} and not files(inbox)
            and (spool_for(inbox) / "being-written.jpg").read_bytes() == face[: len(face) // 2])

        # Files deleted or replaced after the daemon was told of them, before it read them:
        # the daemon is stopped (SIGSTOP) while inotify queues the events.
        noise = save(Image.fromarray(np.random.default_rng(3).integers(
            0, 256, (256, 256, 3), dtype=np.uint8)), "JPEG")
        os.kill(d.pid, signal.SIGSTOP)
        try:
            (inbox / "deleted-while-queued.jpg").write_bytes(face)
            (inbox / "deleted-while-queued.jpg").unlink()
            (inbox / "replaced-while-queued.jpg").write_bytes(noise)
            staged = work / "staging" / "replacement.jpg"
            staged.write_bytes(face)
            os.rename(staged, inbox / "replaced-while-queued.jpg")
            drop(work, "twin-a.jpg", face)  # a name already delivered, dropped again
        finally:
            os.kill(d.pid, signal.SIGCONT)
        writer.write(face[len(face) // 2:])
        writer.close()
        r.raw[b"being-written.jpg"] = face
        r.raw[b"replaced-while-queued.jpg"] = face
        r.dynamic["noise"] = noise
        taken += 3  # the replaced file, the second twin-a.jpg, the finished writer

        def drained() -> bool:
            return settled() and not pending(inbox)

        wait_for(drained, 60, f"the inbox to drain\n{d.output()[-3000:]}")
        time.sleep(1.0)  # long enough for a late duplicate to show
        after = time.monotonic()
        wait_for(lambda: any(t > after for t, _ in d.notify.lines("WATCHDOG=1")), 10,
                 "a watchdog ping after the corpus")
        r.pings_late = len([t for t, _ in d.notify.lines("WATCHDOG=1") if t > after])
        sampler.stop()
        r.rss_baseline_kb, r.rss_peak_kb = sampler.baseline_kb, sampler.peak_kb
        r.exit_code = d.stop()
        r.log = d.output()
    r.seconds = time.monotonic() - t0
    r.outputs = {k: p.read_bytes() for k, p in outputs(work / "outbox").items()}
    r.failures = {k: (p, reason(work / "failed", k) if os.path.lexists(
        os.path.join(os.fsencode(work / "failed"), k + b".reason")) else "")
        for k, p in failures(work / "failed").items()}
    r.left_in_inbox = list(pending(inbox))
    r.state = json.loads((work / "state.json").read_text())
    r.dynamic["temporaries"] = temporaries(work / "outbox")
    r.dynamic["journal"] = list(files(work / "journal"))
    _report(r)
    return r


def _report(r: Run) -> None:
    """The figures for docs/reliability.md (run with -s to see them)."""
    rows: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])

    def count(kind: str, name: bytes) -> None:
        row = rows[kind]
        row[0] += 1
        if _expected_failure(name) in r.failures:
            row[2] += 1
        elif _output_of(r, name) is not None:
            row[1] += 1

    for c in r.cases:
        count(c.kind, c.fs_name)
    for name, kind in r.specials.items():
        count("links, FIFOs, sockets, devices" if kind != "regular file"
              else "folders, hard links", name)
    for name in (b"being-written.jpg", b"writer-died.jpg", b"replaced-while-queued.jpg"):
        count("written, deleted, replaced", name)
    rows["written, deleted, replaced"][0] += 1  # deleted-while-queued: nothing to do
    rows["identical twice"][0] += 1  # twin-a.jpg dropped again
    rows["identical twice"][1] += 1 if b"twin-a-1.jpg" in r.outputs else 0
    print(f"\nhostile corpus: {sum(v[0] for v in rows.values())} inputs in "
          f"{r.seconds:.0f} s; daemon RSS {r.rss_baseline_kb // 1024} MB at start, peak "
          f"{r.rss_peak_kb // 1024} MB")
    for kind, (n, done, failed) in rows.items():
        print(f"  {kind:32s} {n:4d} inputs  redacted {done:4d}  failed {failed:4d}")
    print(f"  outputs {len(r.outputs)}, failures {len(r.failures)}, "
          f"state: processed {r.state['processed']}, failed {r.state['failed']}")


# -- helpers for the checks ----------------------------------------------------------------


def _decode_out(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def _raw_pixels(data: bytes) -> np.ndarray | None:
    try:
        return codec.decode_bytes(data, name="raw", max_pixels=MAX_PIXELS).rgb
    except InputError:
        return None


def _output_of(r: Run, name: bytes) -> bytes | None:
    try:
        want = _expected_output(name, r.raw[name])
    except InputError:
        return None  # not even a header: it cannot have an output
    return r.outputs.get(want)


# -- the checks ------------------------------------------------------------------------------


@pytest.mark.system
def test_the_daemon_kept_running_and_every_input_is_accounted_for(run: Run) -> None:
    assert run.exit_code == 0, run.log[-3000:]
    assert "a worker thread died" not in run.log
    assert "Traceback" not in run.log, run.log[-3000:]
    assert run.pings_late >= 1  # the watchdog still pinged after the whole corpus
    assert run.dynamic["temporaries"] == [] and run.dynamic["journal"] == []
    assert run.left_in_inbox == []
    # Each regular input: exactly one output or one failure; each refused entry: a failure.
    accounted: dict[bytes, str] = {}
    for name, data in run.raw.items():
        out = _expected_output(name, data) if _raw_pixels(data) is not None else None
        fail = _expected_failure(name)
        if out is not None and out in run.outputs:
            accounted[name] = "output"
        elif fail in run.failures:
            accounted[name] = "failed"
    assert set(run.raw) - set(accounted) == set(), "inputs with neither output nor failure"
    refused = [k for k, kind in run.specials.items() if kind != "regular file"]
    assert all(k in run.failures for k in refused)
    dropped = len(run.raw) + len(refused) + 1  # + the name twin-a.jpg dropped a second time
    assert len(run.outputs) + len(run.failures) == dropped
    assert run.state["processed"] == len(run.outputs)
    assert run.state["failed"] == len(run.failures)


@pytest.mark.system
def test_bad_inputs_end_in_failed_with_their_reason(run: Run) -> None:
    wrong = []
    for c in run.cases:
        got = run.failures.get(_expected_failure(c.fs_name))
        if c.expect is Expect.FAIL and got is None:
            wrong.append(f"{c.name!r}: expected a failure, got none")
        if got is not None:
            path, text = got
            if c.expect is Expect.REDACT:
                wrong.append(f"{c.name!r}: expected an output, failed: {text}")
            elif not re.search(c.reason, text):
                wrong.append(f"{c.name!r}: reason {text!r} does not match {c.reason!r}")
            elif path.read_bytes() != c.data:
                wrong.append(f"{c.name!r}: failed/ does not hold the raw file as dropped")
    assert wrong == []
    assert run.failures[b"writer-died.jpg"][1].startswith("truncated or corrupt JPEG")
    # The log says why, one line per file.
    assert re.search(r"moved to \S+/failed/\S+: image is 30000x30000 \(900 MP\), above the 16 MP "
                     "limit", run.log)


@pytest.mark.system
def test_every_face_in_the_corpus_is_destroyed_in_its_output(run: Run) -> None:
    checked, weak = 0, []
    for c in run.cases:
        if not c.face:
            continue
        out = _output_of(run, c.fs_name)
        if out is None:
            assert c.expect is not Expect.REDACT, f"{c.name!r}: no output"
            continue
        raw = _raw_pixels(c.data)
        assert raw is not None
        got = _decode_out(out)
        assert got.shape == raw.shape, c.name
        change, detail = face_destroyed(raw, got)
        if change < FACE_MIN_CHANGE or detail > FACE_MAX_DETAIL:
            weak.append(f"{c.name!r}: face changed by {change:.1f}, detail kept {detail:.2f}")
        checked += 1
    assert weak == []
    assert checked >= 40


@pytest.mark.system
def test_nothing_raw_or_partial_reaches_the_outbox(run: Run) -> None:
    raw_hashes = {hashlib.sha256(d).digest() for d in run.raw.values()}
    raw_hashes.add(hashlib.sha256(run.dynamic["noise"]).digest())  # type: ignore[arg-type]
    with_face = {c.fs_name for c in run.cases if c.face} | {
        k for k, kind in run.specials.items() if kind == "regular file"} | {
        b"being-written.jpg", b"replaced-while-queued.jpg"}
    raw_pixels = set()
    for name in with_face:
        px = _raw_pixels(run.raw[name])
        if px is not None:
            raw_pixels.add(hashlib.sha256(px.tobytes()).digest())
    for name, data in run.outputs.items():
        assert hashlib.sha256(data).digest() not in raw_hashes, name
        img = Image.open(io.BytesIO(data))
        img.load()  # every output is a complete image
        for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"):
            assert key not in img.info, (name, key)
        assert set(img.getexif()) <= TIFF_STRUCTURE, name  # TIFF's own layout tags only
        for secret in (b"Exif", b"HostileCam", b"SN-HOSTILE", b"MAKERNOTE", b"ICC_PROFILE"):
            assert secret not in data, (name, secret)
        px = np.ascontiguousarray(np.asarray(img.convert("RGB")))
        assert hashlib.sha256(px.tobytes()).digest() not in raw_pixels, name
    # Links were moved, never followed: no output holds the file behind them.
    for name, kind in run.specials.items():
        if kind == "symbolic link":
            assert run.failures[name][0].is_symlink()
            assert "symbolic link" in run.failures[name][1]


@pytest.mark.system
def test_memory_stays_bounded(run: Run) -> None:
    # The worst input is the bomb at the limit: 16 MP, 48 MB of RGB once decoded. Two
    # workers at the limit at once stay within what `edgeguard run` budgets per image
    # when it fits max_pixels to the device's memory (startup.fit_to_memory), beside the
    # second model's working set, which its first image allocates (once per process).
    grown = (run.rss_peak_kb - run.rss_baseline_kb) * 1024
    budget = 2 * MAX_PIXELS * BYTES_PER_PIXEL + SECOND_MODEL_BYTES
    assert grown < budget, f"RSS grew by {grown >> 20} MB, budget {budget >> 20} MB"
    assert run.outputs[b"bomb-at-the-limit.png"]  # and it was allowed, not refused


@pytest.mark.system
def test_special_entries_are_refused_and_folders_are_mirrored(run: Run) -> None:
    want = {"symbolic link": "symbolic link", "FIFO": "FIFO", "socket": "a socket",
            "device node": "a device node"}
    for name, kind in run.specials.items():
        if kind == "regular file":
            assert _output_of(run, name) is not None, name
        else:
            assert want[kind] in run.failures[name][1], (name, run.failures[name][1])
    # A folder is not an input: never output or failed. Emptied and settled, the dropped
    # folders (the empty one too) are removed from the inbox; the inbox stays.
    assert b"folder.jpg" not in run.failures and b"folder.jpg" not in run.outputs
    assert b"album.png/inside.jpg" in run.outputs and b"d1/d2/d3/deep.jpg" in run.outputs
    assert sorted(os.listdir(run.work / "inbox")) == [], os.listdir(run.work / "inbox")


@pytest.mark.system
def test_files_that_change_under_the_daemon(run: Run) -> None:
    assert run.dynamic["open_writer_untouched"]  # never taken while its writer had it open
    assert b"being-written.jpg" in run.outputs
    assert b"deleted-while-queued.jpg" not in run.outputs
    assert b"deleted-while-queued.jpg" not in run.failures
    # Replaced before it was read: the replacement is what came out, once.
    out = _decode_out(run.outputs[b"replaced-while-queued.jpg"])
    raw = _raw_pixels(run.raw[b"replaced-while-queued.jpg"])
    assert raw is not None
    mask = np.ones(raw.shape[:2], bool)
    x1, y1, x2, y2 = face_box(raw.shape[1], raw.shape[0])
    mask[y1 - 40:y2 + 40, x1 - 40:x2 + 40] = False
    assert np.abs(out[mask].astype(int) - raw[mask]).mean() < 6  # the face image, not noise
    assert b"replaced-while-queued-1.jpg" not in run.outputs
    # The same bytes under two names, and one name dropped twice: three outputs.
    assert {b"twin-a.jpg", b"twin-b.jpg", b"twin-a-1.jpg"} <= set(run.outputs)


@pytest.mark.system
def test_hostile_names_come_out_under_their_own_name(run: Run) -> None:
    for c in run.cases:
        if c.kind != "hostile name":
            continue
        name = c.fs_name
        if c.expect is Expect.REDACT:
            out = _expected_output(name, c.data)
            assert out in run.outputs, name
            assert len(out) <= OUTPUT_NAME_MAX
            keep = min(200, len(os.fsencode(Path(os.fsdecode(name)).stem)))
            assert out[:keep] == name[:keep]  # shortened at the end only
            assert out + b".json" in files(run.work / "outbox")  # room for the sidecar
        else:
            target = _expected_failure(name)
            path, _ = run.failures[target]
            raw_reason = (path.parent / (path.name + REASON_SUFFIX)).read_bytes()
            assert b"\nsource: " + name + b"\n" in raw_reason  # the name as it was, bytes
    # A newline in a name cannot forge a log line.
    assert "line\\nbreak.jpg" in run.log
    assert not any(line.startswith("break.jpg") for line in run.log.splitlines())


# -- regressions for the bugs the corpus found (fast: no daemon process) ---------------------


def test_a_name_that_is_not_utf8_is_recorded_as_its_own_bytes(tmp_path: Path) -> None:
    inbox, failed = tmp_path / "inbox", tmp_path / "failed"
    inbox.mkdir()
    raw = os.path.join(os.fsencode(inbox), b"bad-\xff\xfe.jpg")
    with open(raw, "wb") as fh:
        fh.write(b"junk")
    sink = FailedSink(failed, max_count=10, max_age_s=3600)
    rel = Path(os.fsdecode(b"bad-\xff\xfe.jpg"))
    got = sink.record(Path(os.fsdecode(raw)), rel, "not an image (unrecognised format)")
    assert got.reason_path is not None
    text = got.reason_path.read_bytes()
    assert text.startswith(b"not an image") and b"source: bad-\xff\xfe.jpg\n" in text


@pytest.mark.parametrize("name", ["x" * 255, "y" * 251 + ".png", "照" * 84 + "xxx",
                                  "z" * 200 + "." + "e" * 54])
def test_names_of_255_bytes_fit_with_every_suffix_the_sinks_add(tmp_path: Path,
                                                               name: str) -> None:
    assert len(os.fsencode(name)) == 255
    for n in range(3):
        out = candidate(Path("sub") / name, n)
        raw = os.fsencode(out.name)
        assert len(raw) <= OUTPUT_NAME_MAX and raw.decode()  # whole characters only
        assert out.parent == Path("sub")
        if n:
            assert out.stem.endswith(f"-{n}")
    sink = FailedSink(tmp_path / "failed", max_count=10, max_age_s=3600)
    for i in range(2):  # the second one collides and takes "-1"
        src = tmp_path / f"src{i}"
        src.write_bytes(b"junk")
        got = sink.record(src, Path(name), "why")
        assert got.reason_path is not None and got.reason_path.exists()
        assert got.path.read_bytes() == b"junk"
        assert len(os.fsencode(got.reason_path.name)) <= NAME_MAX


def test_fit_name_keeps_short_names_and_whole_characters() -> None:
    assert fit_name("photo", ".jpg", 250) == "photo.jpg"
    assert fit_name("é" * 10, ".jpg", 9) == "éé.jpg"  # 4 bytes of stem: two whole é
    assert fit_name("abc", "." + "x" * 20, 8) == "abc.xxxx"  # the suffix itself too long
    bad = os.fsdecode(b"\xff" * 10)
    assert os.fsencode(fit_name(bad, ".jpg", 8)) == b"\xff" * 4 + b".jpg"
