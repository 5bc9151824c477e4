"""The one file-writing layer on real file systems: the disk under tmp_path, /dev/shm (tmpfs),
small tmpfs mounts, and real processes killed mid-write."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.daemon import REPO, shm_dir

from edgeguard import mounts
from edgeguard.errors import OutputError
from edgeguard.sinks import fileops
from edgeguard.sinks.fileops import TMP_PREFIX, candidate_name, publish, publish_bytes
from edgeguard.sinks.journal import Journal
from edgeguard.sinks.outbox import Outbox

STILL = "cam-20260101-120000-123.jpg"  # the camera's still name (camera/loop.py)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- publish_bytes


def test_publish_bytes_writes_the_whole_file(tmp_path: Path) -> None:
    path = publish_bytes(b"x" * 100_000, tmp_path, "photo.jpg")
    assert path == tmp_path / "photo.jpg" and path.read_bytes() == b"x" * 100_000
    assert _listing(tmp_path) == ["photo.jpg"]
    assert path.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_the_final_name_appears_only_after_the_data_is_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if seen:
            return  # the folder's fsync, after the rename
        names = _listing(tmp_path)
        seen.append(names)
        # While the data is being made durable, only a hidden temporary name exists,
        # and it already holds every byte.
        assert len(names) == 1 and names[0].startswith(TMP_PREFIX)
        assert (tmp_path / names[0]).read_bytes() == b"payload"

    monkeypatch.setattr(os, "fsync", fsync)
    publish_bytes(b"payload", tmp_path, "photo.jpg")
    assert len(seen) == 1
    assert _listing(tmp_path) == ["photo.jpg"]


def test_an_existing_name_is_never_replaced_or_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "photo.jpg").symlink_to(victim)
    (tmp_path / "photo.json").write_bytes(b"first")
    with pytest.raises(OutputError, match="no free file name") as caught:
        publish_bytes(b"evil", tmp_path, "photo.json", max_tries=1)
    assert isinstance(caught.value.__cause__, FileExistsError)
    assert publish_bytes(b"second", tmp_path, "photo.jpg").name == "photo-1.jpg"
    assert victim.read_bytes() == b"keep" and (tmp_path / "photo.json").read_bytes() == b"first"
    assert _listing(tmp_path) == ["photo-1.jpg", "photo.jpg", "photo.json", "victim"]


def test_a_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"^outbox folder does not exist$"):
        publish_bytes(b"data", tmp_path / "nope", "photo.jpg")


def test_a_failure_during_fsync_removes_the_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match=r"^I/O error writing to outbox$"):
        publish_bytes(b"data", tmp_path, "photo.jpg")
    assert _listing(tmp_path) == []


def test_bad_names_are_rejected(tmp_path: Path) -> None:
    for name in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(ValueError):
            publish_bytes(b"x", tmp_path, name)
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- free names


def test_the_next_free_suffix_is_taken(tmp_path: Path) -> None:
    (tmp_path / "photo-1.jpg").write_bytes(b"someone else's")
    paths = [publish_bytes(bytes([i]), tmp_path, "photo.jpg") for i in range(3)]
    assert [p.name for p in paths] == ["photo.jpg", "photo-2.jpg", "photo-3.jpg"]
    assert [p.read_bytes() for p in paths] == [b"\x00", b"\x01", b"\x02"]
    assert (tmp_path / "photo-1.jpg").read_bytes() == b"someone else's"


def test_it_gives_up_with_an_output_error(tmp_path: Path) -> None:
    for name in ("a.png", "a-1.png", "a-2.png"):
        (tmp_path / name).touch()
    with pytest.raises(OutputError, match=r"^no free file name in outbox$"):
        publish_bytes(b"x", tmp_path, "a.png", max_tries=3)
    assert _listing(tmp_path) == ["a-1.png", "a-2.png", "a.png"]


def test_one_free_name_rule() -> None:
    assert [candidate_name("img.tar.gz", n) for n in range(3)] == [
        "img.tar.gz", "img.tar-1.gz", "img.tar-2.gz"]
    assert [candidate_name(".hidden", n) for n in range(2)] == [".hidden", ".hidden-1"]
    assert candidate_name("scan", 2) == "scan-2"
    # A name at the limit is shortened for its suffix, never cut inside a character.
    long = "é" * 127 + ".jpg"  # 258 bytes
    for n in (0, 1, 12):
        got = candidate_name(long, n)
        assert len(os.fsencode(got)) <= 255 and got.endswith(f"{'' if n == 0 else f'-{n}'}.jpg")
        got.encode("utf-8")  # whole characters only
    assert len(os.fsencode(candidate_name(long, 1, limit=250))) <= 250


def test_a_name_another_writer_claims_first_is_passed_over(tmp_path: Path) -> None:
    """``before`` runs just before the rename: a racer that takes the name then (or a
    journal entry that says the name is taken) moves publishing on to the next name."""
    src = tmp_path / ".edgeguard-0123456789abcdef.tmp"
    src.write_bytes(b"OURS")
    tried: list[str] = []
    undone: list[str] = []

    def racer(final: Path) -> None:
        tried.append(final.name)
        if final.name == "a.jpg":
            final.write_bytes(b"RACER")  # after our check, before our rename

    final = publish(src, tmp_path, "a.jpg", before=racer,
                    undo=lambda p: undone.append(p.name))
    assert final.name == "a-1.jpg" and tried == ["a.jpg", "a-1.jpg"] and undone == ["a.jpg"]
    assert (tmp_path / "a.jpg").read_bytes() == b"RACER" and final.read_bytes() == b"OURS"
    assert _listing(tmp_path) == ["a-1.jpg", "a.jpg"]


# ----------------------------------------------------------------------------- rename_noreplace


def test_rename_noreplace_is_atomic_on_tmpfs() -> None:
    shm = shm_dir()  # tmpfs, where the inbox and failed/ live
    try:
        (shm / "a").write_bytes(b"A")
        (shm / "b").write_bytes(b"B")
        with pytest.raises(FileExistsError):
            fileops.rename_noreplace(shm / "a", shm / "b")
        assert fileops.rename_noreplace(shm / "a", shm / "c") is True  # renameat2, no link
        assert {p: (shm / p).read_bytes() for p in _listing(shm)} == {"b": b"B", "c": b"A"}
    finally:
        shutil.rmtree(shm, ignore_errors=True)


def test_without_renameat2_a_hard_link_publishes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fileops, "_renameat2", lambda: None)
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    with pytest.raises(FileExistsError):
        fileops.rename_noreplace(tmp_path / "a", tmp_path / "b")
    assert fileops.rename_noreplace(tmp_path / "a", tmp_path / "c") is False
    assert {p: (tmp_path / p).read_bytes() for p in _listing(tmp_path)} == {"b": b"B",
                                                                            "c": b"A"}


def test_without_renameat2_or_hard_links_a_checked_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As on vfat under an old kernel, where link(2) fails with EPERM.
    def no_links(src: Path, dst: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileops, "_renameat2", lambda: None)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    assert fileops.rename_noreplace(src, dst, link=no_links) is True
    assert _listing(tmp_path) == ["dst"] and dst.read_bytes() == b"new"
    src.write_bytes(b"newer")
    with pytest.raises(FileExistsError):
        fileops.rename_noreplace(src, dst, link=no_links)
    assert dst.read_bytes() == b"new" and src.read_bytes() == b"newer"


@pytest.mark.parametrize("renameat2", [True, False])
def test_a_symbolic_link_is_moved_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         renameat2: bool) -> None:
    # failed/ takes refused entries this way: the link moves, its target is never opened.
    if not renameat2:
        monkeypatch.setattr(fileops, "_renameat2", lambda: None)
    (tmp_path / "target").write_bytes(b"T")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    fileops.rename_noreplace(tmp_path / "link", tmp_path / "moved")
    assert (tmp_path / "moved").is_symlink() and not (tmp_path / "link").is_symlink()
    assert os.stat(tmp_path / "target").st_nlink == 1


# ----------------------------------------------------------------------------- the sweep


def test_the_sweep_removes_only_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden-dir").mkdir()
    gone = [tmp_path / ".edgeguard-0123456789abcdef.tmp",
            tmp_path / "sub" / ".edgeguard-0123456789abcdef.mp4",
            # what versions before the one prefix left: a still, a segment, an upload
            tmp_path / f".{STILL}.0123456789abcdef.tmp",
            tmp_path / ".cam-20250101-000000.0123456789abcdef.part.mp4",
            tmp_path / ".upload-0123456789abcdef.part"]
    keep = [tmp_path / STILL, tmp_path / ".someone-elses.tmp", tmp_path / ".photo.jpg.tmp",
            tmp_path / ".hidden-dir" / ".edgeguard-0123456789abcdef.tmp"]
    for p in gone + keep:
        p.write_bytes(b"x")
    (tmp_path / ".edgeguard-link.tmp").symlink_to(tmp_path / STILL)
    assert fileops.sweep_leftovers(tmp_path) == len(gone)
    assert not any(p.exists() for p in gone) and all(p.exists() for p in keep)
    assert (tmp_path / ".edgeguard-link.tmp").is_symlink()
    assert fileops.sweep_leftovers(tmp_path / "missing") == 0


# A camera still, killed: the child publishes a still exactly as camera/loop.py does and is
# SIGKILLed at a chosen point of the write.
_STILL_CHILD = r"""
import os, signal, sys
from pathlib import Path
from edgeguard.sinks import fileops

outbox, name, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
data = b"\xff\xd8" + os.urandom(256 * 1024) + b"\xff\xd9"

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if where == "mid-write":
    real_fill = fileops.fill_new
    def half_then_die(path, fill, *, mode=0o644):
        def half(fh):
            fh.write(data[: len(data) // 2])
            fh.flush()
            die()
        return real_fill(path, half, mode=mode)
    fileops.fill_new = half_then_die
else:  # "before-rename": every byte written and fsync'ed, the rename not yet done
    real_fsync = os.fsync
    def fsync_then_die(fd):
        real_fsync(fd)
        die()
    os.fsync = fsync_then_die
fileops.publish_bytes(data, outbox, name)
"""


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_a_still_killed_mid_write_is_swept_at_the_next_start(tmp_path: Path,
                                                            where: str) -> None:
    outbox, journal = tmp_path / "outbox", tmp_path / "journal"
    outbox.mkdir()
    journal.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _STILL_CHILD, str(outbox), STILL, where],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    # What the crash left: one hidden temporary file; nothing under a final name.
    left = _listing(outbox)
    assert len(left) == 1 and left[0].startswith(TMP_PREFIX), left
    size = (outbox / left[0]).stat().st_size
    assert (size < 128 * 1024 + 4) if where == "mid-write" else size == 256 * 1024 + 4
    # The next start: the daemon recovers its journal and sweeps the outbox before any
    # worker or the camera runs (Daemon._recover).
    box = Outbox(outbox, Journal(journal))
    box.recover()
    assert box.sweep_temporaries() == 1
    assert _listing(outbox) == []
    # The still's name was never taken: the next still gets it.
    assert publish_bytes(b"still", outbox, STILL).name == STILL


# ----------------------------------------------------------------------------- real mounts


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems under tmp_path (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.system
def test_disk_full_leaves_nothing_behind(mount_tmpfs: Callable[[str], Path]) -> None:
    folder = mount_tmpfs("size=256k,mode=0755")
    assert mounts.is_tmpfs(folder) and not mounts.is_tmpfs(folder.parent)
    with pytest.raises(OutputError, match=r"^no space left on outbox device$"):
        publish_bytes(os.urandom(1024 * 1024), folder, "big.jpg")
    assert _listing(folder) == []
    # And once there is room again, the same call succeeds.
    assert publish_bytes(b"ok", folder, "small.jpg").read_bytes() == b"ok"


@pytest.mark.system
def test_read_only_outbox(mount_tmpfs: Callable[[str], Path]) -> None:
    folder = mount_tmpfs("ro,size=64k")
    with pytest.raises(OutputError, match=r"^outbox is on a read-only file system$"):
        publish_bytes(b"data", folder, "a.jpg")
    with pytest.raises(OutputError, match=r"^sidecar is on a read-only file system$"):
        publish_bytes(b"{}", folder, "a.json", label="sidecar")


@pytest.mark.system
def test_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    folder = tmp_path / "outbox"
    folder.mkdir(mode=0o755)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody and try to write
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                publish_bytes(b"data", folder, "a.jpg")
                message = "written"
            except OutputError as exc:
                message = str(exc)
            os.write(write_fd, message.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message == "permission denied writing to outbox"
    assert _listing(folder) == []
