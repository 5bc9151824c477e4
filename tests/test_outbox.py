"""The outbox, the journal and failed/: atomic, never overwriting, crash-safe at every step."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from edgeguard.errors import OutputError
from edgeguard.sinks import outbox as outbox_mod
from edgeguard.sinks.failed import FailedSink
from edgeguard.sinks.journal import PUBLISHING, Identity, Journal
from edgeguard.sinks.outbox import Outbox, output_rel

STEPS = ("journal-begun", "tmp-written", "journaled-publishing", "published",
         "sidecar-written", "inbox-removed", "journal-dropped")


class Crash(BaseException):
    """kill -9 stand-in: a BaseException, so no `except Exception` cleanup runs."""


class CrashAt:
    def __init__(self, step: str, nth: int = 1) -> None:
        self.step = step
        self.nth = nth
        self.seen: list[str] = []

    def __call__(self, step: str) -> None:
        self.seen.append(step)
        if step == self.step and self.seen.count(step) == self.nth:
            raise Crash(step)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("inbox", "outbox", "journal")}
    for p in paths.values():
        p.mkdir()
    return paths


def _drop(world: dict[str, Path], rel: str, data: bytes = b"RAW") -> tuple[Path, Identity]:
    p = world["inbox"] / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p, Identity.of(os.lstat(p))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def _deliver(world: dict[str, Path], source: Path, ident: Identity, rel_out: str, *,
             checkpoint: outbox_mod.Checkpoint = outbox_mod.no_checkpoint,
             sidecar: str | None = '{"faces": 1}') -> Path:
    box = Outbox(world["outbox"], Journal(world["journal"]), checkpoint=checkpoint)
    delivery = box.deliver(source=source, identity=ident, rel_out=Path(rel_out),
                           data=b"REDACTED", sidecar=sidecar)
    box.complete(delivery)
    return delivery.final


@pytest.mark.parametrize(("rel", "fmt", "suffix", "out"), [
    ("a.jpg", "jpeg", ".jpg", "a.jpg"),
    ("A.JPEG", "jpeg", ".jpg", "A.JPEG"),  # the input's own spelling is kept
    ("b.png", "jpeg", ".jpg", "b.jpg"),
    ("sub/c.gif", "png", ".png", "sub/c.png"),
    ("scan", "jpeg", ".jpg", "scan.jpg"),
    ("v1.2", "png", ".png", "v1.2.png"),
])
def test_output_names(rel: str, fmt: str, suffix: str, out: str) -> None:
    assert output_rel(Path(rel), fmt, suffix) == Path(out)


def test_delivery_publishes_then_removes_the_input(world: dict[str, Path]) -> None:
    src, ident = _drop(world, "sub/a.jpg")
    final = _deliver(world, src, ident, "sub/a.jpg")
    assert final == world["outbox"] / "sub/a.jpg"
    assert _files(world["outbox"]) == {"sub/a.jpg": b"REDACTED",
                                       "sub/a.jpg.json": b'{"faces": 1}'}
    assert not src.exists()
    assert _files(world["journal"]) == {}


def test_a_collision_gets_a_suffix_and_nothing_is_overwritten(world: dict[str, Path]) -> None:
    (world["outbox"] / "a.jpg").write_bytes(b"THEIRS")
    (world["outbox"] / "a-1.jpg").write_bytes(b"THEIRS TOO")
    src, ident = _drop(world, "a.jpg")
    final = _deliver(world, src, ident, "a.jpg", sidecar=None)
    assert final.name == "a-2.jpg"
    assert _files(world["outbox"]) == {"a.jpg": b"THEIRS", "a-1.jpg": b"THEIRS TOO",
                                       "a-2.jpg": b"REDACTED"}


def test_an_input_replaced_meanwhile_is_not_deleted(world: dict[str, Path]) -> None:
    src, ident = _drop(world, "a.jpg", b"FIRST")
    src.unlink()
    src.write_bytes(b"SECOND, a new drop under the same name")
    _deliver(world, src, ident, "a.jpg")
    assert src.read_bytes().startswith(b"SECOND")


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_ends_in_exactly_one_output(world: dict[str, Path],
                                                        step: str) -> None:
    src, ident = _drop(world, "a.jpg")
    with pytest.raises(Crash):
        _deliver(world, src, ident, "a.jpg", checkpoint=CrashAt(step))
    # Restart: recover what the journal says, then process what the inbox still holds.
    box = Outbox(world["outbox"], Journal(world["journal"]))
    box.recover()
    box.sweep_temporaries()
    if src.exists():
        _deliver(world, src, Identity.of(os.lstat(src)), "a.jpg")
    assert _files(world["outbox"]) == {"a.jpg": b"REDACTED", "a.jpg.json": b'{"faces": 1}'}
    assert not src.exists()
    assert _files(world["journal"]) == {}


def test_a_crash_after_a_collision_retry_still_ends_in_one_output(
        world: dict[str, Path]) -> None:
    (world["outbox"] / "a.jpg").write_bytes(b"THEIRS")
    src, ident = _drop(world, "a.jpg")

    def collide_then_crash(step: str) -> None:
        # The first candidate "appears" right after it was journaled (another writer).
        if step == "journaled-publishing" and not (world["outbox"] / "a-1.jpg").exists():
            (world["outbox"] / "a-1.jpg").write_bytes(b"RACER")
            return
        if step == "published":
            raise Crash(step)

    with pytest.raises(Crash):
        _deliver(world, src, ident, "a.jpg", checkpoint=collide_then_crash)
    Outbox(world["outbox"], Journal(world["journal"])).recover()
    assert not src.exists()
    assert _files(world["outbox"]) == {"a.jpg": b"THEIRS", "a-1.jpg": b"RACER",
                                       "a-2.jpg": b"REDACTED",
                                       "a-2.jpg.json": b'{"faces": 1}'}


def test_link_fallback_state_is_recovered_as_published(world: dict[str, Path]) -> None:
    """Without renameat2, publishing is link + unlink; a crash between leaves both names."""
    src, ident = _drop(world, "a.jpg")
    journal = Journal(world["journal"])
    journal.open()
    tmp = world["outbox"] / ".edgeguard-0123456789abcdef.tmp"
    tmp.write_bytes(b"REDACTED")
    final = world["outbox"] / "a.jpg"
    rec = journal.begin(inbox=src, identity=ident, tmp=tmp)
    journal.advance(rec, phase=PUBLISHING, final=str(final))
    os.link(tmp, final)
    Outbox(world["outbox"], journal).recover()
    assert _files(world["outbox"]) == {"a.jpg": b"REDACTED"}
    assert not src.exists()


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "no space"), (errno.EROFS, "read-only"), (errno.EACCES, "permission"),
])
def test_outbox_errors_leave_nothing_and_keep_the_input(
        world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    def half_then_fail(path: Path, data: bytes, *, mode: int = 0o644) -> None:
        path.write_bytes(data[: len(data) // 2])  # a partial file, as a full disk leaves
        path.unlink()  # write_new's own cleanup
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(outbox_mod, "write_new", half_then_fail)
    src, ident = _drop(world, "a.jpg")
    box = Outbox(world["outbox"], Journal(world["journal"]))
    with pytest.raises(OutputError, match=words):
        box.deliver(source=src, identity=ident, rel_out=Path("a.jpg"), data=b"REDACTED")
    assert _files(world["outbox"]) == {}
    assert src.read_bytes() == b"RAW"
    assert _files(world["journal"]) == {}


def test_an_unreadable_journal_record_is_dropped(world: dict[str, Path]) -> None:
    (world["journal"] / "junk.json").write_text("{not json")
    assert Journal(world["journal"]).records() == []
    assert _files(world["journal"]) == {}


def test_sweep_removes_only_our_temporaries(world: dict[str, Path]) -> None:
    (world["outbox"] / "sub").mkdir()
    (world["outbox"] / "sub" / ".edgeguard-00aa.tmp").write_bytes(b"half")
    (world["outbox"] / ".someone-elses.tmp").write_bytes(b"x")
    (world["outbox"] / "keep.jpg").write_bytes(b"x")
    assert Outbox(world["outbox"], Journal(world["journal"])).sweep_temporaries() == 1
    assert set(_files(world["outbox"])) == {".someone-elses.tmp", "keep.jpg"}


# -- failed/ ----------------------------------------------------------------------------------


def test_failed_moves_the_raw_file_with_its_reason(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "a.jpg").write_bytes(b"RAW")
    sink = FailedSink(tmp_path / "failed", max_count=10, max_age_s=3600)
    first = sink.record(inbox / "sub" / "a.jpg", Path("sub/a.jpg"), "not an image")
    (inbox / "sub" / "a.jpg").write_bytes(b"RAW2")
    second = sink.record(inbox / "sub" / "a.jpg", Path("sub/a.jpg"), "truncated")
    assert first.path == tmp_path / "failed/sub/a.jpg"
    assert second.path == tmp_path / "failed/sub/a-1.jpg"
    assert first.path.read_bytes() == b"RAW" and second.path.read_bytes() == b"RAW2"
    assert first.reason_path.read_text().splitlines()[0] == "not an image"
    assert "source: sub/a.jpg" in second.reason_path.read_text()
    assert not (inbox / "sub" / "a.jpg").exists()


def test_failed_moves_a_link_without_following_it(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    target = tmp_path / "secret.jpg"
    target.write_bytes(b"SECRET")
    (tmp_path / "inbox" / "l.jpg").symlink_to(target)
    sink = FailedSink(tmp_path / "failed", max_count=10, max_age_s=3600)
    f = sink.record(tmp_path / "inbox" / "l.jpg", Path("l.jpg"), "refused: a link")
    assert f.path.is_symlink() and os.readlink(f.path) == str(target)
    assert target.read_bytes() == b"SECRET"


def test_failed_is_bounded_by_count_and_age(tmp_path: Path) -> None:
    now = 1_000_000.0
    root = tmp_path / "failed"
    sink = FailedSink(root, max_count=3, max_age_s=100, clock=lambda: now)
    (root / "sub").mkdir(parents=True)
    ages = {"a": 5, "b": 10, "c": 20, "d": 30, "sub/e": 500}
    for name, age in ages.items():
        raw, reason = root / name, root / f"{name}.reason"
        raw.write_bytes(b"x")
        reason.write_text("why")
        for p in (raw, reason):
            os.utime(p, (now - age, now - age))
    orphan = root / "z.reason"  # a crash between writing the reason and the move
    orphan.write_text("why")
    os.utime(orphan, (now - 90, now - 90))
    assert sink.prune() == 3  # d (count), sub/e (age), the orphan reason
    assert sorted(_files(root)) == ["a", "a.reason", "b", "b.reason", "c", "c.reason"]
    assert not (root / "sub").exists()


def test_sidecar_is_json(world: dict[str, Path]) -> None:
    src, ident = _drop(world, "a.jpg")
    _deliver(world, src, ident, "a.jpg", sidecar=json.dumps({"faces": 2}))
    assert json.loads((world["outbox"] / "a.jpg.json").read_text()) == {"faces": 2}


def test_a_journal_that_cannot_be_written_is_an_output_error(world: dict[str, Path]) -> None:
    src, ident = _drop(world, "a.jpg")
    box = Outbox(world["outbox"], Journal(world["journal"] / "missing" / "deeper"))
    with pytest.raises(OutputError, match="journal"):
        box.deliver(source=src, identity=ident, rel_out=Path("a.jpg"), data=b"REDACTED")
    assert _files(world["outbox"]) == {} and src.exists()
