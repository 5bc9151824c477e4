"""fsutil on real file systems: the disk under tmp_path and small tmpfs mounts."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeguard import fsutil, mounts
from edgeguard.errors import OutputError


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ----------------------------------------------------------------------------- atomic_write


def test_atomic_write_writes_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"
    fsutil.atomic_write(target, b"x" * 100_000)
    assert target.read_bytes() == b"x" * 100_000
    assert _listing(tmp_path) == ["photo.jpg"]
    assert target.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_final_name_appears_only_after_data_is_synced(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"
    seen: list[list[str]] = []

    def fsync(fd: int) -> None:
        os.fsync(fd)
        names = _listing(tmp_path)
        seen.append(names)
        # While the data is being made durable, only a hidden temporary name exists,
        # and it already holds every byte.
        assert "photo.jpg" not in names
        assert len(names) == 1 and names[0].startswith(".photo.jpg.")
        assert names[0].endswith(".tmp")
        assert (tmp_path / names[0]).read_bytes() == b"payload"

    fsutil.atomic_write(target, b"payload", fsync=fsync)
    assert len(seen) == 1
    assert _listing(tmp_path) == ["photo.jpg"]


def test_atomic_write_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"first")
    with pytest.raises(FileExistsError):
        fsutil.atomic_write(target, b"second")
    assert target.read_bytes() == b"first"
    assert _listing(tmp_path) == ["photo.jpg"]  # no temporary file left behind


def test_atomic_write_never_follows_or_replaces_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "photo.jpg").symlink_to(victim)
    with pytest.raises(FileExistsError):
        fsutil.atomic_write(tmp_path / "photo.jpg", b"evil")
    assert victim.read_bytes() == b"keep"


def test_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"^outbox folder does not exist$"):
        fsutil.atomic_write(tmp_path / "nope" / "photo.jpg", b"data")


def test_failure_during_fsync_removes_the_temporary_file(tmp_path: Path) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OutputError, match=r"^I/O error writing to outbox$"):
        fsutil.atomic_write(tmp_path / "photo.jpg", b"data", fsync=failing_fsync)
    assert _listing(tmp_path) == []


def test_bad_names_are_rejected(tmp_path: Path) -> None:
    for name in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            fsutil.write_unique(tmp_path, name, "", b"x")


# ----------------------------------------------------------------------------- naming


def test_write_unique_picks_the_next_free_suffix(tmp_path: Path) -> None:
    (tmp_path / "photo-1.jpg").write_bytes(b"someone else's")
    paths = [fsutil.write_unique(tmp_path, "photo", ".jpg", bytes([i])) for i in range(3)]
    assert [p.name for p in paths] == ["photo.jpg", "photo-2.jpg", "photo-3.jpg"]
    assert [p.read_bytes() for p in paths] == [b"\x00", b"\x01", b"\x02"]
    assert (tmp_path / "photo-1.jpg").read_bytes() == b"someone else's"
    assert _listing(tmp_path) == ["photo-1.jpg", "photo-2.jpg", "photo-3.jpg", "photo.jpg"]


def test_write_unique_gives_up_with_an_output_error(tmp_path: Path) -> None:
    for name in ("a.png", "a-1.png", "a-2.png"):
        (tmp_path / name).touch()
    with pytest.raises(OutputError, match="no free file name"):
        fsutil.write_unique(tmp_path, "a", ".png", b"x", max_tries=3)
    assert _listing(tmp_path) == ["a-1.png", "a-2.png", "a.png"]


def test_unique_path_and_candidates(tmp_path: Path) -> None:
    names = fsutil.candidate_names("img.tar.gz")
    assert [next(names) for _ in range(3)] == ["img.tar.gz", "img.tar-1.gz", "img.tar-2.gz"]
    names = fsutil.candidate_names(".hidden")
    assert [next(names) for _ in range(2)] == [".hidden", ".hidden-1"]
    assert fsutil.unique_path(tmp_path, "a.jpg") == tmp_path / "a.jpg"
    (tmp_path / "a.jpg").touch()
    assert fsutil.unique_path(tmp_path, "a.jpg") == tmp_path / "a-1.jpg"


def test_rename_noreplace_without_hard_links(tmp_path: Path) -> None:
    # As on vfat or CIFS, where link(2) fails with EPERM: renameat2 takes over.
    def no_links(src: Path, dst: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    fsutil.rename_noreplace(src, dst, link=no_links)
    assert _listing(tmp_path) == ["dst"] and dst.read_bytes() == b"new"
    src.write_bytes(b"newer")
    with pytest.raises(FileExistsError):
        fsutil.rename_noreplace(src, dst, link=no_links)
    assert dst.read_bytes() == b"new" and src.read_bytes() == b"newer"


def test_remove_stale_temps_only_touches_our_temporaries(tmp_path: Path) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt  # a crash right after the data was written

    with pytest.raises(KeyboardInterrupt):
        fsutil.atomic_write(tmp_path / "a.jpg", b"x", fsync=interrupted)
    assert _listing(tmp_path) == []  # even then the temporary file went
    stale = tmp_path / ".a.jpg.0123456789abcdef.tmp"  # what a power cut leaves
    stale.write_bytes(b"x")
    keep = [tmp_path / ".a.jpg.tmp", tmp_path / ".hidden", tmp_path / "a.jpg"]
    for path in keep:
        path.write_bytes(b"y")
    assert fsutil.remove_stale_temps(tmp_path) == 1
    assert _listing(tmp_path) == sorted(p.name for p in keep)
    assert fsutil.remove_stale_temps(tmp_path / "missing") == 0


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
        fsutil.atomic_write(folder / "big.jpg", os.urandom(1024 * 1024))
    assert _listing(folder) == []
    with pytest.raises(OutputError, match=r"^no space left on outbox device$"):
        fsutil.write_unique(folder, "big", ".jpg", os.urandom(1024 * 1024))
    assert _listing(folder) == []
    # And once there is room again, the same call succeeds.
    assert fsutil.write_unique(folder, "small", ".jpg", b"ok").read_bytes() == b"ok"


@pytest.mark.system
def test_read_only_outbox(mount_tmpfs: Callable[[str], Path]) -> None:
    folder = mount_tmpfs("ro,size=64k")
    with pytest.raises(OutputError, match=r"^outbox is on a read-only file system$"):
        fsutil.atomic_write(folder / "a.jpg", b"data")
    with pytest.raises(OutputError, match=r"^sidecar is on a read-only file system$"):
        fsutil.atomic_write(folder / "a.json", b"{}", label="sidecar")


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
                fsutil.atomic_write(folder / "a.jpg", b"data")
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
