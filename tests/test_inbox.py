"""The inbox: names, kinds, scans, settling, and the real inotify watcher."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.daemon import wait_for

from edgeguard.sources import inbox
from edgeguard.sources.inbox import InboxWatcher, Kind, Settler


@pytest.mark.parametrize(("name", "ignored"), [
    ("photo.jpg", False), ("IMG_0001.JPG", False), ("scan", False), ("a.b.c.png", False),
    (".hidden.jpg", True), (".photo.jpg.Ab12Cd", True),  # rsync's temporary name
    ("photo.jpg.part", True), ("photo.JPG.PART", True), ("x.tmp", True), ("photo.jpg~", True),
    ("", True),
])
def test_ignored_names(name: str, ignored: bool) -> None:
    assert inbox.is_ignored_name(name) is ignored


def test_any_hidden_component_hides_the_path() -> None:
    assert inbox.is_ignored(Path(".sync/a.jpg"))
    assert not inbox.is_ignored(Path("holiday/a.jpg"))


def test_kinds_of_real_entries(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "f")
    os.mkfifo(tmp_path / "p")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "s"))
        kinds = {p.name: inbox.kind_of(os.lstat(p).st_mode) for p in tmp_path.iterdir()}
    assert kinds == {"f": Kind.REGULAR, "d": Kind.DIRECTORY, "l": Kind.SYMLINK,
                     "p": Kind.FIFO, "s": Kind.SOCKET}
    assert inbox.refusal(Kind.REGULAR) is None and inbox.refusal(Kind.DIRECTORY) is None
    for kind in (Kind.SYMLINK, Kind.FIFO, Kind.SOCKET, Kind.DEVICE):
        assert (inbox.refusal(kind) or "").startswith("refused:")
    assert "never followed" in (inbox.refusal(Kind.SYMLINK) or "")


def test_scan_descends_real_folders_only(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"1")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b.jpg").write_bytes(b"2")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.jpg").write_bytes(b"3")
    (tmp_path / "d.jpg.part").write_bytes(b"4")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"5")
    (tmp_path / "linked").symlink_to(outside)  # a link to a folder: reported, not entered
    found = {str(f.path.relative_to(tmp_path)) for f in inbox.scan(tmp_path)}
    assert found == {"a.jpg", "sub/deeper/b.jpg", "linked"}


def test_scan_survives_a_folder_vanishing(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"1")

    @contextlib.contextmanager
    def racy(path: str) -> Iterator[Iterator[os.DirEntry[str]]]:
        if path.endswith("gone"):
            raise FileNotFoundError(path)
        with os.scandir(path) as it:
            yield it

    assert [f.path.name for f in inbox.scan(tmp_path, listdir=racy)] == ["a.jpg"]


def test_oldest_first_within_a_limit(tmp_path: Path) -> None:
    for i, name in enumerate(["c", "a", "b", "d"]):
        p = tmp_path / name
        p.write_bytes(b"x")
        os.utime(p, ns=(0, 1_000_000_000 * (10 + i)))
    picked = inbox.oldest(inbox.scan(tmp_path), 2)
    assert [f.path.name for f in picked] == ["c", "a"]


def test_young_uses_ctime_too(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_bytes(b"x")
    os.utime(p, (1, 1))  # `cp -p`: an old mtime, but the ctime is now
    st = os.lstat(p)
    assert inbox.is_young(st, time.time_ns(), 5.0)
    assert not inbox.is_young(st, time.time_ns() + 10**10, 5.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_settler_waits_for_stable_size_and_no_open_writer(tmp_path: Path) -> None:
    clock = FakeClock()
    s = Settler(1.0, clock=clock, writer_open=lambda _: None)  # leases unknown
    p = tmp_path / "a.jpg"
    p.write_bytes(b"123")
    s.track(p)
    assert s.due() == []  # first look records the size
    clock.t += 0.5
    p.write_bytes(b"123456")
    assert s.due() == []  # grew: the clock restarts
    clock.t += 0.9
    assert s.due() == []
    s.opened(p)  # a writer came back
    clock.t += 5
    assert s.due() == []
    s.closed(p)
    clock.t += 1.0
    assert s.due() == [p]
    assert p not in s


def test_settler_takes_a_file_at_once_when_a_lease_shows_no_writer(tmp_path: Path) -> None:
    clock = FakeClock()
    writing = {True}
    s = Settler(60.0, clock=clock, writer_open=lambda _: bool(writing))
    p = tmp_path / "a.jpg"
    p.write_bytes(b"123")
    s.track(p)
    assert s.due() == []  # a writer holds it
    writing.clear()
    p.write_bytes(b"123456")
    assert s.due() == [p]  # no stable_s wait


def test_settler_drops_vanished_and_passes_refused_kinds(tmp_path: Path) -> None:
    clock = FakeClock()
    s = Settler(1.0, clock=clock)
    gone = tmp_path / "gone.jpg"
    link = tmp_path / "l.jpg"
    link.symlink_to("/etc/hostname")
    s.track(gone)
    s.track(link)
    assert s.due() == [link]
    assert len(s) == 0


def test_writer_has_open_sees_a_writer(tmp_path: Path) -> None:
    p = tmp_path / "a"
    with p.open("wb") as w:
        w.write(b"x")
        fd = os.open(p, os.O_RDONLY)
        try:
            while_open = inbox.writer_has_open(fd)
        finally:
            os.close(fd)
    fd = os.open(p, os.O_RDONLY)
    try:
        after = inbox.writer_has_open(fd)
    finally:
        os.close(fd)
    if while_open is None:
        pytest.skip("file leases unavailable here (not the owner, or leases disabled)")
    assert while_open is True
    assert after is False


# -- the real watcher -------------------------------------------------------------------------


class Collected:
    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        with self.lock:
            self.paths.append(path)

    def names(self) -> list[str]:
        with self.lock:
            return [p.name for p in self.paths]


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[Path, Collected, Settler]]:
    root = tmp_path / "inbox"
    root.mkdir()
    got = Collected()
    settler = Settler(0.2)
    with InboxWatcher(root, ready=got, settler=settler) as w:
        assert w.alive()
        yield root, got, settler


def test_watcher_takes_a_file_when_its_writer_closes(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, _ = watched
    with (root / "a.jpg").open("wb") as fh:
        fh.write(b"part one")
        fh.flush()
        time.sleep(0.3)
        assert got.names() == []  # still open: not taken
        fh.write(b"part two")
    wait_for(lambda: got.names() == ["a.jpg"], 5, "close event")


def test_watcher_takes_a_rename_and_ignores_partial_names(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, settler = watched
    (root / "b.jpg.part").write_bytes(b"x")
    (root / ".c.jpg.XYZ").write_bytes(b"x")
    time.sleep(0.2)
    assert got.names() == []
    os.rename(root / "b.jpg.part", root / "b.jpg")
    wait_for(lambda: got.names() == ["b.jpg"], 5, "move event")
    assert len(settler) == 0


def test_watcher_takes_a_move_from_another_folder(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, _ = watched
    elsewhere = root.parent / "staging"
    elsewhere.mkdir()
    (elsewhere / "d.jpg").write_bytes(b"x")
    time.sleep(0.1)
    os.rename(elsewhere / "d.jpg", root / "d.jpg")
    wait_for(lambda: got.names() == ["d.jpg"], 5, "moved-in event")


def test_watcher_settles_a_file_that_appears_without_a_close(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, settler = watched
    src = root.parent / "e-src.jpg"
    src.write_bytes(b"x" * 100)
    os.link(src, root / "e.jpg")  # IN_CREATE only: no open, no close
    wait_for(lambda: root / "e.jpg" in settler, 5, "create event")
    assert got.names() == []
    wait_for(lambda: settler.due() == [root / "e.jpg"], 5, "settling")


def test_watcher_reports_files_in_new_subfolders(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, settler = watched
    (root / "sub").mkdir()
    # watchdog adds the folder's watch from its thread; a file made before that is only
    # found by its scan (a create, settled). A probe shows the watch is there.
    probe = root / "sub" / "probe.jpg"
    probe.write_bytes(b"p")
    wait_for(lambda: probe in settler or probe in got.paths, 5, "the subfolder's watch")
    (root / "sub" / "f.jpg").write_bytes(b"x")
    wait_for(lambda: [str(p.relative_to(root)) for p in got.paths if p != probe]
             == ["sub/f.jpg"], 5, "close in a subfolder")


def test_watcher_refuses_links_without_settling(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, settler = watched
    (root / "g.jpg").symlink_to("/etc/hostname")
    wait_for(lambda: got.names() == ["g.jpg"], 5, "symlink create")
    assert len(settler) == 0


def test_watcher_is_not_alive_once_the_inbox_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    with InboxWatcher(root, ready=Collected(), settler=Settler(1.0)) as w:
        assert w.alive()
        root.rename(tmp_path / "old-inbox")
        root.mkdir()  # same path, another folder: events would never come
        wait_for(lambda: not w.alive(), 5, "the watcher to notice")


def test_watcher_is_not_alive_once_the_inbox_is_deleted(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    with InboxWatcher(root, ready=Collected(), settler=Settler(1.0)) as w:
        root.rmdir()
        wait_for(lambda: not w.alive(), 5, "the watcher to notice")


def test_watcher_finds_the_files_of_a_folder_moved_in(
        watched: tuple[Path, Collected, Settler]) -> None:
    root, got, settler = watched
    album = root.parent / "album"
    (album / "day1").mkdir(parents=True)
    (album / "a.jpg").write_bytes(b"x")
    (album / "day1" / "b.jpg").write_bytes(b"y")
    os.rename(album, root / "album")  # one rename: no event per file

    def both() -> bool:
        for p in settler.due():
            got(p)
        return sorted(str(p.relative_to(root)) for p in got.paths) == ["album/a.jpg",
                                                                       "album/day1/b.jpg"]

    wait_for(both, 5, "the moved-in folder's files")
