"""fsutil on real file systems: the disk under tmp_path, /dev/shm, and small tmpfs mounts."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeguard import fsutil
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


# ----------------------------------------------------------------------------- tmpfs checks


def test_dev_shm_is_tmpfs() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    assert fsutil.statfs_magic(shm) == fsutil.TMPFS_MAGIC
    assert fsutil.is_tmpfs(shm)
    assert fsutil.is_tmpfs(shm / "not-created-yet")
    assert fsutil.fs_type(shm) == "tmpfs"


def test_disk_folder_is_not_tmpfs() -> None:
    repo = Path(__file__).resolve().parent
    if fsutil.statfs_magic(repo) == fsutil.TMPFS_MAGIC:
        pytest.skip("the checkout itself is on tmpfs")
    assert not fsutil.is_tmpfs(repo)
    assert fsutil.fs_type(repo) != "tmpfs"


def test_symlink_into_tmpfs_is_resolved(tmp_path: Path) -> None:
    link = tmp_path / "inbox"
    link.symlink_to("/dev/shm")
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    assert fsutil.is_tmpfs(link)


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 8:1 / /mnt/my rw,relatime shared:7 - ext4 /dev/sda1 rw
41 27 0:50 / /mnt/my\\040inbox rw,nosuid - tmpfs tmp\\040fs rw,size=1024k
42 27 0:51 / /srv rw - ext4 /dev/sdb1 rw
43 42 0:52 / /srv rw - tmpfs tmpfs rw
44 27 0:53 / /mnt/myinbox2 rw - vfat /dev/sdc1 rw
this line is not mountinfo
"""


def test_mountinfo_parsing_escapes_and_longest_prefix() -> None:
    mounts = fsutil.parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 7
    assert mounts[3] == fsutil.Mount("/mnt/my inbox", "tmpfs", "tmp fs", "rw,nosuid")

    def fstype(path: str) -> str:
        return fsutil.mount_for(Path(path), mountinfo=MOUNTINFO).fstype

    assert fstype("/mnt/my inbox/a.jpg") == "tmpfs"
    assert fstype("/mnt/my inbox") == "tmpfs"
    assert fstype("/mnt/my/a.jpg") == "ext4"
    assert fstype("/mnt/myinbox") == "ext4"  # "/mnt/my" is not a prefix of this folder
    assert fsutil.mount_for(Path("/mnt/myinbox"), mountinfo=MOUNTINFO).mount_point == "/"
    assert fstype("/mnt/myinbox2/x") == "vfat"
    assert fstype("/srv/inbox") == "tmpfs"  # of stacked mounts, the last is visible
    with pytest.raises(OSError):
        fsutil.mount_for(Path("/x"), mountinfo="garbage\n")


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
    assert fsutil.is_tmpfs(folder) and not fsutil.is_tmpfs(folder.parent)
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
