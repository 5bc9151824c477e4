"""The spool: claiming arrivals out of the shared inbox, and the ACL entry the service adds.

Real files on a real tmpfs (/dev/shm); the two-user case (a dropper's folder, another
member trying to read) needs real users and the unit's capabilities, and is in
tests/system/test_shared_inbox.py.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeguard import mounts
from edgeguard.sources import acl
from edgeguard.sources.spool import Claimer, spool_for


@pytest.fixture
def inbox() -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not mounts.is_tmpfs(shm):
        pytest.skip("no /dev/shm tmpfs")
    root = shm / f"edgeguard-spool-test-{os.getpid()}-{time.monotonic_ns()}"
    (root / "inbox").mkdir(parents=True)
    (root / "inbox.spool").mkdir(mode=0o700)
    try:
        yield root / "inbox"
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _claimer(inbox: Path, **kw: object) -> Claimer:
    return Claimer(inbox, spool_for(inbox), stable_s=1.0, **kw)  # type: ignore[arg-type]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_spool_is_a_sibling_of_the_inbox() -> None:
    assert spool_for(Path("/run/edgeguard/inbox")) == Path("/run/edgeguard/inbox.spool")


def test_a_file_is_claimed_with_its_path_and_hidden_names_are_left(inbox: Path) -> None:
    (inbox / "a.jpg").write_bytes(b"A")
    (inbox / "sub" / "deeper").mkdir(parents=True)
    (inbox / "sub" / "deeper" / "b.jpg").write_bytes(b"B")
    for name in (".rsync.a.jpg.XYZ", "c.jpg.part", "d.tmp", "e.jpg~"):
        (inbox / name).write_bytes(b"partial")
    seen: list[Path] = []
    c = _claimer(inbox, on_claim=seen.append)
    assert c.sweep() == 2
    spool = spool_for(inbox)
    assert (spool / "a.jpg").read_bytes() == b"A"
    assert (spool / "sub" / "deeper" / "b.jpg").read_bytes() == b"B"
    assert sorted(seen) == [spool / "a.jpg", spool / "sub" / "deeper" / "b.jpg"]
    # The spool's folders are the service's alone.
    assert stat.S_IMODE((spool / "sub").stat().st_mode) == 0o700
    assert sorted(p.name for p in inbox.iterdir()) == [
        ".rsync.a.jpg.XYZ", "c.jpg.part", "d.tmp", "e.jpg~", "sub"]


def test_a_file_still_open_is_claimed_and_its_writer_writes_on(inbox: Path) -> None:
    with (inbox / "w.jpg").open("wb") as fh:
        fh.write(b"first half, ")
        fh.flush()
        claimed = _claimer(inbox).claim(inbox / "w.jpg")
        assert claimed == spool_for(inbox) / "w.jpg"
        assert not (inbox / "w.jpg").exists()
        fh.write(b"second half")
    assert claimed.read_bytes() == b"first half, second half"


def test_a_name_still_in_the_spool_waits_in_the_inbox(inbox: Path) -> None:
    spool = spool_for(inbox)
    (spool / "x.jpg").write_bytes(b"being processed")
    (inbox / "x.jpg").write_bytes(b"the next one")
    c = _claimer(inbox)
    assert c.claim(inbox / "x.jpg") is None
    assert (spool / "x.jpg").read_bytes() == b"being processed"  # never replaced
    c.tidy()
    assert (inbox / "x.jpg").exists()
    (spool / "x.jpg").unlink()  # done
    c.tidy()  # the next supervisor tick
    assert (spool / "x.jpg").read_bytes() == b"the next one"
    assert not (inbox / "x.jpg").exists()


def test_emptied_folders_are_removed_once_settled_never_the_inbox(inbox: Path) -> None:
    (inbox / "burst" / "inner").mkdir(parents=True)
    (inbox / "burst" / "inner" / "p.jpg").write_bytes(b"P")
    (inbox / "kept").mkdir()
    (inbox / "kept" / ".still-writing.part").write_bytes(b"")
    now = [time.time_ns()]
    c = _claimer(inbox, now_ns=lambda: now[0])
    assert c.sweep() == 1
    # Just emptied: a writer may still be filling it (the same rule as for files).
    assert (inbox / "burst" / "inner").is_dir()
    now[0] += 2 * 10**9
    c.sweep()
    assert _files(inbox) == ["kept", "kept/.still-writing.part"]
    assert inbox.is_dir()
    # The spool's emptied folders go once their files are done.
    (spool_for(inbox) / "burst" / "inner" / "p.jpg").unlink()
    c.sweep()
    assert _files(spool_for(inbox)) == []


def test_a_folder_emptied_by_claims_goes_at_the_next_tick_once_settled(inbox: Path) -> None:
    (inbox / "burst").mkdir()
    (inbox / "burst" / "a.jpg").write_bytes(b"A")
    mono, wall = [100.0], [time.time_ns()]
    c = _claimer(inbox, clock=lambda: mono[0], now_ns=lambda: wall[0])
    c.claim(inbox / "burst" / "a.jpg")
    c.tidy()
    assert (inbox / "burst").is_dir()  # just emptied: a writer may still be filling it
    mono[0] += 1.5
    wall[0] += int(1.5e9)
    c.tidy()
    assert list(inbox.iterdir()) == [] and inbox.is_dir()
    # The spool's folder goes once its file is done.
    assert (spool_for(inbox) / "burst").is_dir()
    (spool_for(inbox) / "burst" / "a.jpg").unlink()
    c.tidy()
    assert list(spool_for(inbox).iterdir()) == []


def test_a_folder_swapped_for_a_link_is_not_followed(inbox: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "output.jpg").write_bytes(b"not the dropper's")
    (inbox / "batch").symlink_to(elsewhere)
    c = _claimer(inbox)
    assert c.claim(inbox / "batch" / "output.jpg") is None
    assert c.sweep() == 1  # the link itself is claimed (and refused by the daemon)
    assert (elsewhere / "output.jpg").read_bytes() == b"not the dropper's"
    assert (spool_for(inbox) / "batch").is_symlink()


def test_an_inbox_reached_through_a_link_still_works(inbox: Path) -> None:
    alias = inbox.parent / "alias"
    alias.symlink_to(inbox.parent)
    (inbox / "sub").mkdir()
    (inbox / "sub" / "a.jpg").write_bytes(b"A")
    c = Claimer(alias / "inbox", alias / "inbox.spool", stable_s=1.0)
    assert c.claim(alias / "inbox" / "sub" / "a.jpg") == alias / "inbox.spool" / "sub" / "a.jpg"


def test_links_and_fifos_are_claimed_as_they_are_never_followed(inbox: Path,
                                                                tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    (inbox / "link.jpg").symlink_to(secret)
    os.mkfifo(inbox / "pipe.jpg")
    assert _claimer(inbox).sweep() == 2
    spool = spool_for(inbox)
    assert (spool / "link.jpg").is_symlink() and stat.S_ISFIFO(os.lstat(spool / "pipe.jpg").st_mode)
    with pytest.raises(OSError):  # no ACL entry was put on the link's target
        os.getxattr(secret, acl.XATTR)


def test_an_unreadable_claimed_file_is_opened_to_the_service_alone(inbox: Path) -> None:
    grants: list[tuple[Path, int, int]] = []

    def grant(path: Path, uid: int, perm: int) -> None:
        grants.append((path, uid, perm))

    (inbox / "locked.jpg").write_bytes(b"L")
    os.chmod(inbox / "locked.jpg", 0o000)
    c = _claimer(inbox, grant=grant, uid=4242)
    c.claim(inbox / "locked.jpg")
    if os.access(spool_for(inbox) / "locked.jpg", os.R_OK):
        assert grants == []  # root reads anything: nothing to grant
    else:
        # Granted where it was, before the move: readable the moment it is in the spool.
        assert grants == [(inbox / "locked.jpg", 4242, 4)]


# -- ACLs ------------------------------------------------------------------------------------


def test_an_entry_for_the_service_changes_nothing_else() -> None:
    before = acl.from_mode(0o750)
    after = acl.with_user(before, 990, 7)
    assert after[(acl.USER, 990)] == 7
    assert after[(acl.USER_OBJ, acl.UNDEFINED_ID)] == 7
    assert after[(acl.GROUP_OBJ, acl.UNDEFINED_ID)] == 5  # the owning group gains nothing
    assert after[(acl.OTHER, acl.UNDEFINED_ID)] == 0
    assert after[(acl.MASK, acl.UNDEFINED_ID)] == 7
    assert acl.parse(acl.build(after)) == after


def test_grant_writes_a_real_acl(inbox: Path) -> None:
    f = inbox / "f.jpg"
    f.write_bytes(b"x")
    os.chmod(f, 0o640)
    try:
        acl.grant(f, 4242, 4)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on this tmpfs: {exc}")
    got = acl.parse(os.getxattr(f, acl.XATTR))
    assert got[(acl.USER, 4242)] == 4
    # The mode's group bits now show the mask (r--: the owning group's r-- and ours).
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    acl.grant(f, 4242, 2)  # added to what is there
    assert acl.parse(os.getxattr(f, acl.XATTR))[(acl.USER, 4242)] == 6
    assert stat.S_IMODE(f.stat().st_mode) == 0o660


def test_grant_refuses_a_link(inbox: Path) -> None:
    (inbox / "l").symlink_to("/etc/passwd")
    with pytest.raises(OSError):
        acl.grant(inbox / "l", 4242, 4)
