"""The daemon's logic with a small stand-in processor (the system tests use the real one).

Real folders, the real inotify watcher and real threads; only the pipeline is replaced,
by :class:`FakeProcessor`, so these tests isolate queueing, failure handling, backoff,
watchdog health and reload.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.daemon import PATIENCE, wait_for

from edgeguard import config, startup
from edgeguard.commands.status import render
from edgeguard.config import Config
from edgeguard.daemon import (
    Backoff,
    Control,
    Daemon,
    ItemOutcome,
    Supervisor,
    WorkQueue,
    config_changes,
    plan_reload,
)
from edgeguard.errors import ConfigError, DecodeError, ModelError, StartupError
from edgeguard.lognames import Namer, shown
from edgeguard.pipeline import Redacted
from edgeguard.startup import Paths
from edgeguard.web.status import read_state


class FakeProcessor:
    """Stand-in for Pipeline: "redacts" by prefixing; BAD/BUG/HANG/GROW contents misbehave."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.configs: list[Config] = []
        self.calls = 0
        self.fail_reload = False
        self.delay_s = 0.0

    def redact_file(self, path: Path) -> Redacted:
        self.calls += 1
        data = Path(path).read_bytes()
        if self.delay_s:
            time.sleep(self.delay_s)
        if data.startswith(b"BAD"):
            raise DecodeError("not an image (test)")
        if data.startswith(b"BUG"):
            real = os.readlink(path) if str(path).startswith("/proc/") else str(path)
            raise ValueError(f"a bug while reading {real}")
        if data.startswith(b"HANG"):
            self.gate.wait()
        if data.startswith(b"GROW") and self.calls == 1:
            with open(os.readlink(path), "ab") as fh:  # a writer appends while we read
                fh.write(b" and more")
        return Redacted(data=b"REDACTED:" + data, format="jpeg", suffix=".jpg", width=1,
                        height=1, detections=(), regions=())

    def with_config(self, cfg: Config) -> FakeProcessor:
        if self.fail_reload:
            raise ModelError("model x missing (test)")
        self.configs.append(cfg)
        return self


class Notes:
    def __init__(self) -> None:
        self.messages: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def __call__(self, message: str) -> bool:
        with self.lock:
            for line in message.splitlines():
                self.messages.append((time.monotonic(), line))
        return True

    def count(self, line: str, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t, m in self.messages if m == line and t >= since)


@dataclasses.dataclass
class Running:
    daemon: Daemon
    paths: Paths
    notes: Notes
    processor: FakeProcessor
    thread: threading.Thread
    result: list[int]

    def stop(self) -> int:
        self.daemon.stop()
        self.thread.join(10 * PATIENCE)
        assert not self.thread.is_alive()
        return self.result[0]


def _cfg(**daemon: object) -> Config:
    base = {"stable_s": 0.1, "retry_max_s": 1.0, "rescan_s": 60.0} | daemon
    return config.from_dict({"daemon": base})


@pytest.fixture
def layout(tmp_path: Path) -> Paths:
    run = tmp_path / "run"
    paths = Paths(inbox=run / "inbox", outbox=tmp_path / "outbox", failed=run / "failed",
                  runtime=run)
    for p in (paths.inbox, paths.outbox, paths.failed):
        p.mkdir(parents=True)
    return paths


@pytest.fixture
def start(layout: Paths) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def go(cfg: Config | None = None, *, processor: FakeProcessor | None = None,
           watchdog_s: float | None = None,
           load_config: Callable[[], Config] | None = None) -> Running:
        proc = processor or FakeProcessor()
        notes = Notes()
        d = Daemon(cfg or _cfg(), layout, proc, notify=notes, watchdog_s=watchdog_s,
                   load_config=load_config)
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(d.run()), daemon=True)
        t.start()
        wait_for(lambda: notes.count("READY=1") > 0 or not t.is_alive(), 10, "READY=1")
        r = Running(d, layout, notes, proc, t, result)
        started.append(r)
        return r

    yield go
    for r in started:
        r.processor.gate.set()
        if r.thread.is_alive():
            r.stop()


def _drop(inbox: Path, rel: str, data: bytes) -> Path:
    p = inbox / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".part")
    tmp.write_bytes(data)
    os.rename(tmp, p)
    return p


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes; a file renamed away while we look (the
    daemon's temporary files are) is left out, as it would be a moment later."""
    tree = {}
    for p in sorted(root.rglob("*")):
        try:
            if p.is_file():
                tree[str(p.relative_to(root))] = p.read_bytes()
        except FileNotFoundError:
            continue
    return tree


def test_existing_and_new_files_are_redacted_and_removed(
        layout: Paths, start: Callable[..., Running]) -> None:
    old = layout.inbox / "old.jpg"
    old.write_bytes(b"OLD")
    os.utime(old, (1, 1))
    time.sleep(0.15)  # older than stable_s by its ctime too
    r = start()
    _drop(layout.inbox, "sub/new.png", b"NEW")
    wait_for(lambda: len(_tree(layout.outbox)) == 2 and not _tree(layout.inbox)
             and not _tree(layout.spool), 5,
             "two outputs")
    assert _tree(layout.outbox) == {"old.jpg": b"REDACTED:OLD", "sub/new.jpg": b"REDACTED:NEW"}
    assert _tree(layout.inbox) == {}
    assert r.stop() == 0
    assert r.notes.count("STOPPING=1") == 1
    state = json.loads((layout.runtime / "state.json").read_text())
    assert state["processed"] == 2 and state["state"] == "stopped"


def test_bad_inputs_and_bugs_fail_closed(layout: Paths, start: Callable[..., Running]) -> None:
    r = start()
    _drop(layout.inbox, "bad.jpg", b"BAD")
    _drop(layout.inbox, "bug.jpg", b"BUG")
    wait_for(lambda: len(_tree(layout.failed)) == 4, 5, "two failures")
    failed = _tree(layout.failed)
    assert failed["bad.jpg"] == b"BAD" and failed["bug.jpg"] == b"BUG"
    assert failed["bad.jpg.reason"].startswith(b"not an image (test)\n")
    assert failed["bug.jpg.reason"].startswith(b"internal error: ValueError: a bug while")
    assert _tree(layout.outbox) == {}
    assert r.stop() == 0


def test_refused_entries_go_to_failed_without_being_followed(
        layout: Paths, start: Callable[..., Running], tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"SECRET")
    r = start()
    (layout.inbox / "link.jpg").symlink_to(secret)
    os.mkfifo(layout.inbox / "pipe.jpg")
    names = ["link.jpg", "pipe.jpg"]
    if os.geteuid() == 0:  # mknod needs CAP_MKNOD
        os.mknod(layout.inbox / "dev.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        names.append("dev.jpg")
    # The .reason is written in place, then the entry renamed in beside it: once every
    # entry is there, every reason is whole.
    wait_for(lambda: all(os.path.lexists(layout.failed / n) for n in names), 5, "refusals")
    assert (layout.failed / "link.jpg").is_symlink()
    assert "symbolic link" in (layout.failed / "link.jpg.reason").read_text()
    assert "FIFO" in (layout.failed / "pipe.jpg.reason").read_text()
    if "dev.jpg" in names:
        assert stat.S_ISCHR(os.lstat(layout.failed / "dev.jpg").st_mode)
        assert "device node" in (layout.failed / "dev.jpg.reason").read_text()
    assert r.processor.calls == 0 and _tree(layout.outbox) == {}
    r.stop()


def test_a_full_queue_drops_hints_but_never_files(
        layout: Paths, start: Callable[..., Running]) -> None:
    proc = FakeProcessor()
    proc.delay_s = 0.002
    r = start(_cfg(queue_size=2), processor=proc)
    for i in range(60):
        _drop(layout.inbox, f"f{i:02d}.jpg", b"X%d" % i)
    wait_for(lambda: len(_tree(layout.outbox)) == 60 and not _tree(layout.inbox)
             and not _tree(layout.spool), 20,
             "60 outputs")
    assert sorted(_tree(layout.outbox)) == [f"f{i:02d}.jpg" for i in range(60)]
    r.stop()


def test_a_file_still_open_for_writing_waits_for_its_close(
        layout: Paths, start: Callable[..., Running]) -> None:
    r = start()
    src = layout.inbox.parent / "staging.jpg"
    with src.open("wb") as writer:
        writer.write(b"HALF")
        writer.flush()
        os.link(src, layout.inbox / "w.jpg")  # appears with no close, writer still open
        time.sleep(0.6)
        if r.processor.calls and (layout.failed / "w.jpg").exists():
            pytest.fail("taken while open")
        writer.write(b" AND THE REST")
    wait_for(lambda: (layout.outbox / "w.jpg").exists(), 5, "output after close")
    assert (layout.outbox / "w.jpg").read_bytes() == b"REDACTED:HALF AND THE REST"
    r.stop()


def test_a_file_changed_while_read_is_redone_once(
        layout: Paths, start: Callable[..., Running]) -> None:
    r = start()
    _drop(layout.inbox, "g.jpg", b"GROW")
    wait_for(lambda: (layout.outbox / "g.jpg").exists(), 5, "output")
    time.sleep(0.3)
    assert _tree(layout.outbox) == {"g.jpg": b"REDACTED:GROW and more"}
    r.stop()


def test_a_deferred_file_is_taken_again_even_when_settled_before_its_worker_lets_go(
        layout: Paths, start: Callable[..., Running]) -> None:
    """The worker defers a file that changed while read and hands it to the settler; if the
    settler finds it ready before the worker has released it, the queue must not drop it
    as a duplicate (it would then wait for the next rescan, an hour away here: longer than
    any patience given to the wait below)."""
    r = start(_cfg(rescan_s=3600.0))
    queue = r.daemon.queue
    release = queue.release

    def slow_release(path: Path) -> None:
        time.sleep(0.5)  # several supervisor ticks with the path still in flight
        release(path)

    queue.release = slow_release  # type: ignore[method-assign]
    _drop(layout.inbox, "g.jpg", b"GROW")
    wait_for(lambda: (layout.outbox / "g.jpg").exists(), 5, "output")
    assert _tree(layout.outbox) == {"g.jpg": b"REDACTED:GROW and more"}
    r.stop()


def test_an_unwritable_outbox_pauses_work_and_resumes_by_itself(
        layout: Paths, start: Callable[..., Running], caplog: pytest.LogCaptureFixture) -> None:
    layout.outbox.rmdir()
    layout.outbox.write_bytes(b"not a folder")  # every delivery fails
    r = start()
    with caplog.at_level(logging.ERROR, logger="edgeguard.daemon"):
        for i in range(3):
            _drop(layout.inbox, f"k{i}.jpg", b"K")
        # The pause starts just before the outage is logged: wait for the line itself.
        # Claimed into the private spool at once, and kept there while the outbox is down.
        wait_for(lambda: r.daemon.backoff.failing and "stays queued" in caplog.text
                 and sorted(_tree(layout.spool)) == ["k0.jpg", "k1.jpg", "k2.jpg"], 5,
                 "the outbox to fail")
    assert _tree(layout.inbox) == {}
    layout.outbox.unlink()
    layout.outbox.mkdir(exist_ok=True)  # the daemon's retry may create it first (seen on arm64)
    wait_for(lambda: len(_tree(layout.outbox)) == 3 and not _tree(layout.spool), 10,
             "outputs after recovery")
    assert not r.daemon.backoff.failing
    r.stop()


def test_the_item_handler_returns_how_each_item_ended(layout: Paths) -> None:
    """One item at a time, in this thread: the handler's outcome and what it left."""
    d = Daemon(_cfg(), layout, FakeProcessor(), notify=Notes())
    d.open()
    grow = _drop(layout.spool, "grow.jpg", b"GROW")  # first: it grows on the first call
    ok = _drop(layout.spool, "sub/ok.jpg", b"OK")
    bad = _drop(layout.spool, "bad.jpg", b"BAD")
    bug = _drop(layout.spool, "bug.jpg", b"BUG")
    (layout.spool / "link.jpg").symlink_to(ok)
    (layout.spool / "folder").mkdir()
    handle = d.items.handle
    assert handle(grow, 0.0) is ItemOutcome.DEFERRED and grow in d.settler
    assert handle(grow, 0.0) is ItemOutcome.DONE
    assert handle(ok, 0.0) is ItemOutcome.DONE
    assert handle(bad, 0.0) is ItemOutcome.FAILED
    assert handle(bug, 0.0) is ItemOutcome.FAILED  # the boundary: a bug fails the item
    assert handle(layout.spool / "link.jpg", 0.0) is ItemOutcome.FAILED
    assert handle(layout.spool / "folder", 0.0) is ItemOutcome.GONE
    assert handle(layout.spool / "never.jpg", 0.0) is ItemOutcome.GONE
    assert _tree(layout.outbox) == {"grow.jpg": b"REDACTED:GROW and more",
                                    "sub/ok.jpg": b"REDACTED:OK"}
    assert sorted(p for p in _tree(layout.failed) if not p.endswith(".reason")) == [
        "bad.jpg", "bug.jpg"]
    assert (layout.failed / "link.jpg").is_symlink()
    assert sorted(os.listdir(layout.spool)) == ["folder", "sub"]


def test_an_unwritable_outbox_is_retried_with_backoff_and_logged_once(
        layout: Paths, caplog: pytest.LogCaptureFixture) -> None:
    """The item handler alone, no threads, on a fake clock: blocked items stay in the
    spool, each retry after a pause doubles it up to retry_max_s, the outage is logged (and
    sent as STATUS) once, and the same files are delivered once the outbox works."""
    now = [1000.0]
    notes = Notes()
    d = Daemon(_cfg(retry_max_s=4.0), layout, FakeProcessor(), notify=notes,
               clock=lambda: now[0])
    d.open()
    layout.outbox.rmdir()
    layout.outbox.write_bytes(b"not a folder")
    spooled = [_drop(layout.spool, f"k{i}.jpg", b"K") for i in range(3)]
    with caplog.at_level(logging.DEBUG, logger="edgeguard.daemon"):
        assert [d.items.handle(p, now[0]) for p in spooled] == [ItemOutcome.BLOCKED] * 3
        assert d.paused() and d.backoff.remaining() == 1.0  # in-progress ones: not extended
        for pause in (2.0, 4.0, 4.0):
            now[0] += d.backoff.remaining()
            assert not d.paused()
            assert d.items.handle(spooled[0], now[0]) is ItemOutcome.BLOCKED
            assert d.backoff.remaining() == pause
    assert caplog.text.count("stays queued") == 1
    assert sum(m.startswith("STATUS=") for _, m in notes.messages) == 1
    assert sorted(_tree(layout.spool)) == ["k0.jpg", "k1.jpg", "k2.jpg"]
    assert d.queue.refill_due()  # the rescan after the pause finds them again
    layout.outbox.unlink()
    layout.outbox.mkdir()
    now[0] += d.backoff.remaining()
    with caplog.at_level(logging.WARNING, logger="edgeguard.daemon"):
        assert [d.items.handle(p, now[0]) for p in spooled] == [ItemOutcome.DONE] * 3
    assert caplog.text.count("outbox writable again") == 1 and not d.backoff.failing
    assert _tree(layout.outbox) == {f"k{i}.jpg": b"REDACTED:K" for i in range(3)}
    assert _tree(layout.spool) == {}


def test_a_stuck_worker_stops_the_watchdog_pings(
        layout: Paths, start: Callable[..., Running], caplog: pytest.LogCaptureFixture) -> None:
    r = start(_cfg(stuck_s=1.0), watchdog_s=0.4)
    wait_for(lambda: r.notes.count("WATCHDOG=1") >= 3, 5, "pings")
    with caplog.at_level(logging.ERROR, logger="edgeguard.daemon"):
        _drop(layout.inbox, "h.jpg", b"HANG")
        # The supervisor logs this in the tick that finds the worker stuck; every ping it
        # sent before came earlier, from the same thread, so none is after quiet_since.
        wait_for(lambda: "stuck on h.jpg" in caplog.text, 5, "the worker to count as stuck")
    quiet_since = time.monotonic()
    _drop(layout.inbox, "ok.jpg", b"OK")  # the other worker still works
    wait_for(lambda: (layout.outbox / "ok.jpg").exists(), 5, "the other worker")
    time.sleep(1.0)
    assert r.notes.count("WATCHDOG=1", since=quiet_since) == 0
    r.processor.gate.set()
    wait_for(lambda: r.notes.count("WATCHDOG=1", since=quiet_since) > 0, 5, "pings again")
    r.stop()


def test_stop_drains_within_its_bound(layout: Paths, start: Callable[..., Running]) -> None:
    r = start(_cfg(drain_s=0.5))
    _drop(layout.inbox, "h.jpg", b"HANG")
    wait_for(lambda: r.daemon.queue.counts()[1] == 1, 5, "the hang to start")
    t0 = time.monotonic()
    assert r.stop() == 1  # the bound passed with an image still in progress
    assert time.monotonic() - t0 < 3 * PATIENCE  # the hang is endless: drain_s ended it
    assert (layout.spool / "h.jpg").exists() and not r.daemon.clean_exit


def test_reload_applies_what_it_can_and_keeps_the_rest(
        layout: Paths, start: Callable[..., Running], caplog: pytest.LogCaptureFixture) -> None:
    nxt: list[Config | Exception] = []

    def load() -> Config:
        item = nxt.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    r = start(_cfg(), load_config=load)
    watchdog_level = logging.getLogger("watchdog").level  # set at start-up, then left alone
    with caplog.at_level(logging.INFO, logger="edgeguard.daemon"):
        nxt.append(config.from_dict({"redact": {"mode": "solid"}, "daemon": {
            "stable_s": 0.1, "retry_max_s": 1.0, "rescan_s": 60.0, "hide_filenames": True,
            "inbox": "/elsewhere"}}))
        r.daemon.request_reload()
        wait_for(lambda: "reload: applied" in caplog.text, 5, "reload")
    assert r.daemon.cfg.redact.mode == "solid" and r.daemon.cfg.daemon.hide_filenames
    assert logging.getLogger("watchdog").level == watchdog_level == logging.WARNING
    assert r.daemon.cfg.daemon.inbox == ""  # needs a restart: kept
    assert "daemon.inbox need a restart" in caplog.text
    assert [c.redact.mode for c in r.processor.configs] == ["solid"]
    assert r.notes.count("RELOADING=1") == 1
    with caplog.at_level(logging.ERROR, logger="edgeguard.daemon"):
        nxt.append(ConfigError("edgeguard.toml: unknown key redact.colour"))
        r.daemon.request_reload()
        wait_for(lambda: "unknown key" in caplog.text, 5, "bad reload")
        r.processor.fail_reload = True
        nxt.append(config.from_dict({"redact": {"mode": "pixelate"}}))
        r.daemon.request_reload()
        wait_for(lambda: "model x missing" in caplog.text, 5, "failed rebuild")
    assert r.daemon.cfg.redact.mode == "solid"  # both bad reloads kept the running config
    _drop(layout.inbox, "after.jpg", b"A")
    wait_for(lambda: (layout.outbox / "after.jpg").exists(), 5, "still working")
    r.stop()


def test_the_state_file_names_each_recent_failure_with_its_reason(
        layout: Paths, start: Callable[..., Running]) -> None:
    """Two failures in a row: the last error names only the second, the list both (the web
    page shows each upload its own reason)."""
    r = start()
    _drop(layout.inbox, "one.jpg", b"BAD")
    _drop(layout.inbox, "sub/two.jpg", b"BAD")

    def recent() -> dict[str, str]:  # as the web page reads it
        snap = read_state(layout.runtime) or {}
        return {f["name"]: f["reason"] for f in snap.get("recent_failures", [])}

    wait_for(lambda: len(recent()) == 2, 5, "both failures in the state file")
    assert recent() == {"one.jpg": "not an image (test)", "sub/two.jpg": "not an image (test)"}
    r.stop()


def test_hidden_file_names_stay_out_of_the_logs(
        layout: Paths, start: Callable[..., Running], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        r = start(_cfg(hide_filenames=True))
        _drop(layout.inbox, "Alice-at-home.jpg", b"X")
        _drop(layout.inbox, "Bob-at-work.jpg", b"BAD")
        _drop(layout.inbox, "Carol-on-holiday.jpg", b"BUG")
        wait_for(lambda: (layout.outbox / "Alice-at-home.jpg").exists()
                 and (layout.failed / "Bob-at-work.jpg").exists()
                 and (layout.failed / "Carol-on-holiday.jpg").exists(), 5, "all three")
        r.stop()
    assert "file#" in caplog.text and "Traceback" in caplog.text
    for name in ("Alice", "Bob", "Carol"):
        assert name not in caplog.text
        assert name not in (layout.runtime / "state.json").read_text()


def test_a_second_daemon_on_the_same_runtime_folder_is_refused(
        layout: Paths, start: Callable[..., Running]) -> None:
    r = start()
    other = Daemon(_cfg(), layout, FakeProcessor(), notify=Notes())
    with pytest.raises(StartupError, match="another edgeguard daemon"):
        other.run()
    r.stop()


# -- pure pieces ------------------------------------------------------------------------------


def test_work_queue_dedupes_and_bounds() -> None:
    q = WorkQueue(2, clock=lambda: 5.0)
    a, b, c = Path("/i/a"), Path("/i/b"), Path("/i/c")
    assert q.offer(a) and not q.offer(a) and q.offer(b)
    assert not q.offer(c) and q.overflowed
    assert q.take(0) == (a, 5.0)
    assert not q.offer(a)  # in flight
    q.release(a)
    assert q.offer(a)
    assert q.take_overflow() and not q.take_overflow()
    q.close()
    assert q.take(0) is None


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    now = [0.0]
    b = Backoff(cap_s=4.0, clock=lambda: now[0])
    assert b.failure() == (1.0, True)
    assert b.failure() == (1.0, False)  # while paused: not extended
    now[0] = 1.0
    assert b.failure()[0] == 2.0
    now[0] = 3.0
    assert b.failure()[0] == 4.0
    now[0] = 7.0
    assert b.failure()[0] == 4.0  # capped
    assert b.success() and not b.failing and b.remaining() == 0


def test_config_changes_lists_each_key() -> None:
    old = Config()
    new = config.from_dict({"redact": {"mode": "solid"}, "daemon": {"workers": 3}})
    assert config_changes(old, new) == [("redact", "mode", "blur", "solid"),
                                        ("daemon", "workers", 2, 3)]


def test_log_names_are_printable_or_hidden(tmp_path: Path) -> None:
    namer = Namer(tmp_path / "spool", tmp_path / "outbox", hide=False)
    path = tmp_path / "spool" / "sub" / "a\nb.jpg"
    assert namer.name(path) == "sub/a\\nb.jpg"  # a newline cannot forge a log line
    assert namer.out_name(tmp_path / "outbox" / "x.jpg") == "x.jpg"
    namer.hide = True
    token = namer.name(path)
    assert token.startswith("file#") and token == namer.name(path)
    assert namer.scrub(f"cannot read {path}: sub/a\nb.jpg", path) == (
        f"cannot read {token}: {token}")
    assert namer.out_name(tmp_path / "outbox" / "x.jpg") == shown("x.jpg", hide=True)


def test_a_reload_plan_keeps_restart_only_settings() -> None:
    old = Config()
    new = config.from_dict({"redact": {"mode": "solid"},
                            "daemon": {"workers": 3, "stable_s": 2.0}})
    plan = plan_reload(old, new)
    assert plan.kept == [("daemon", "workers", 2, 3)]
    assert plan.applied == [("redact", "mode", "blur", "solid"), ("daemon", "stable_s", 1.0, 2.0)]
    assert plan.cfg.daemon.workers == 2 and plan.cfg.daemon.stable_s == 2.0
    assert plan.rebuilds_processor
    assert not plan_reload(old, config.from_dict({"daemon": {"stable_s": 2.0}})
                           ).rebuilds_processor


class FakeHost:
    """What the supervisor steers, reduced to flags and a log of what it was told to do."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.is_paused = False
        self.wants_refill = False
        self.why: str | None = None
        self.ok = True
        self.key: tuple[object, ...] = (0,)

    def housekeep(self) -> None:
        pass

    def rescan_s(self) -> float:
        return 60.0

    def paused(self) -> bool:
        return self.is_paused

    def refill_due(self) -> bool:
        return self.wants_refill

    def rescan(self) -> None:
        self.done.append("rescan")

    def prune(self) -> None:
        self.done.append("prune")

    def fault(self) -> str | None:
        return self.why

    def healthy(self, now: float) -> bool:
        return self.ok

    def state_key(self) -> tuple[object, ...]:
        return self.key

    def write_state(self, state: str) -> dict[str, object]:
        self.done.append("state")
        return {"processed": self.key[0], "failed": 0, "faces": 0}


def _supervisor(host: FakeHost, now: list[float], notes: Notes,
                watchdog_s: float | None = None) -> Supervisor:
    return Supervisor(host, Control(), notify=notes, watchdog_s=watchdog_s,
                      clock=lambda: now[0])


def test_the_supervisor_pings_the_watchdog_only_while_healthy() -> None:
    host, now, notes = FakeHost(), [0.0], Notes()
    sup = _supervisor(host, now, notes, watchdog_s=4.0)  # a ping due every second
    assert sup.tick == 0.5
    pings = []
    for t, ok in [(0.0, True), (0.5, True), (1.0, True), (2.0, False), (3.0, False),
                  (3.5, True)]:
        now[0], host.ok = t, ok
        assert sup.step() is None
        pings.append(notes.count("WATCHDOG=1"))
    assert pings == [1, 1, 2, 2, 2, 3]


def test_the_supervisor_rescans_on_time_or_for_a_refill_never_while_paused() -> None:
    host, now, notes = FakeHost(), [0.0], Notes()
    sup = _supervisor(host, now, notes)
    sup.step()
    assert host.done.count("rescan") == 0 and host.done.count("prune") == 1
    host.wants_refill = host.is_paused = True
    sup.step()
    assert host.done.count("rescan") == 0  # the outbox pause holds the refill back
    host.is_paused = False
    sup.step()
    assert host.done.count("rescan") == 1
    host.wants_refill = False
    now[0] = 59.0
    sup.step()
    assert host.done.count("rescan") == 1
    now[0] = 60.0 + 1.0  # rescan_s after the refill
    sup.step()
    assert host.done.count("rescan") == 2 and host.done.count("prune") == 2


def test_the_supervisor_writes_the_state_when_it_changes_at_most_once_a_second() -> None:
    host, now, notes = FakeHost(), [0.0], Notes()
    sup = _supervisor(host, now, notes)
    written = []
    for t, key in [(0.5, 0), (1.0, 1), (1.5, 2), (2.0, 2), (2.5, 3), (5.0, 3), (7.0, 3)]:
        now[0], host.key = t, (key,)
        sup.step()
        written.append(host.done.count("state"))
    # 1.5 and 2.5 changed it within a second of the last write: held back to the next step.
    assert written == [0, 1, 1, 2, 2, 3, 3]
    assert [m for _, m in notes.messages if m.startswith("STATUS=")] == [
        f"STATUS=processed {n}, failed 0, faces 0 (+0 weak), queued 0, in progress 0"
        for n in (1, 2, 3)]


def test_the_supervisor_gives_up_on_a_fault(caplog: pytest.LogCaptureFixture) -> None:
    host, now, notes = FakeHost(), [0.0], Notes()
    sup = _supervisor(host, now, notes, watchdog_s=4.0)
    host.why = "a worker thread died"
    with caplog.at_level(logging.ERROR, logger="edgeguard.daemon"):
        assert sup.step() == 1
    assert "a worker thread died; exiting so systemd restarts us" in caplog.text
    assert notes.count("WATCHDOG=1") == 0


# -- start-up checks --------------------------------------------------------------------------


def test_default_paths_prefer_run_then_dev_shm(tmp_path: Path) -> None:
    cfg = Config()
    p = startup.resolve_paths(cfg, base=lambda: Path("/run/edgeguard"))
    assert p.inbox == Path("/run/edgeguard/inbox") and p.failed == Path("/run/edgeguard/failed")
    assert p.runtime == Path("/run/edgeguard") and p.outbox == Path.cwd() / "outbox"
    assert str(startup.default_base(lambda _: False)).startswith("/dev/shm/edgeguard-")


def test_an_inbox_not_on_tmpfs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="not on tmpfs"):
        startup.check_tmpfs("inbox", tmp_path / "inbox", 0o770, is_tmpfs=lambda _: False)


def test_nested_folders_are_refused(tmp_path: Path) -> None:
    p = Paths(inbox=tmp_path / "in", outbox=tmp_path / "in" / "out", failed=tmp_path / "f",
              runtime=tmp_path)
    with pytest.raises(StartupError, match="must not contain each other"):
        startup.check_layout(p)


def test_status_render() -> None:
    snap = {"pid": 7, "started_at": 1000.0, "updated_at": 1100.0, "processed": 12,
            "failed": 1, "faces": 30, "queued": 2, "in_flight": 1,
            "latency_ms": {"p50": 120.0, "p95": 480.4, "count": 12},
            "last_error": "a.jpg: not an image", "last_error_at": 1050.0,
            "inbox": "/run/edgeguard/inbox", "outbox": "/var/lib/edgeguard/outbox"}
    text = render(snap, running=True, now=1000.0 + 3725)
    assert "running (pid 7), up 1h 2m 5s" in text
    assert "processed 12, failed 1, faces 30 (+0 weak regions), queued 2" in text
    assert "p50 120 ms, p95 480 ms" in text and "a.jpg: not an image" in text


def test_the_example_config_names_every_key_with_its_default() -> None:
    """deploy/edgeguard.example.toml: each key, commented out, at its default value."""
    import re
    import tomllib

    text = (Path(__file__).resolve().parents[1] / "deploy/edgeguard.example.toml").read_text()
    uncommented = re.sub(r"(?m)^# (\w+ = )", r"\1", text)
    data = tomllib.loads(uncommented)
    assert config.from_dict(data, source="example") == Config()  # valid, and the defaults
    for name, cls in config.SECTIONS.items():
        assert set(data.get(name, {})) == {f.name for f in dataclasses.fields(cls)}, name


def test_stats_latency_percentiles_and_counts() -> None:
    from edgeguard.state import Stats, percentile, status_line

    assert percentile([], 50) is None
    stats = Stats(clock=lambda: 10.0, wall=lambda: 1000.0)
    for ms in range(1, 101):
        stats.done(faces=2, weak=1, latency_s=ms / 1000)
    stats.failure("x\\n.jpg", "not an image", listed="x\n.jpg")  # logged escaped, listed as is
    stats.failure("(name hidden)", "not an image")  # hide_filenames: not on the list
    snap = stats.snapshot(queued=3, in_flight=1)
    assert snap["recent_failures"] == [{"name": "x\n.jpg", "reason": "not an image",
                                        "at": 1000.0}]
    assert snap["last_error"] == "(name hidden): not an image"
    assert snap["latency_ms"] == {"p50": 50.5, "p95": 95.0, "count": 100}
    assert (snap["processed"], snap["failed"], snap["faces"]) == (100, 2, 200)
    assert snap["weak"] == 100
    assert status_line(snap) == ("processed 100, failed 2, faces 200 (+100 weak), queued 3, "
                                 "in progress 1")
