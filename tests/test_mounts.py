"""mounts on real file systems: the disk under the checkout, /dev/shm, and mountinfo text."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeguard import mounts

# ----------------------------------------------------------------------------- tmpfs checks


def test_dev_shm_is_tmpfs() -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    assert mounts.statfs_magic(shm) == mounts.TMPFS_MAGIC
    assert mounts.is_tmpfs(shm)
    assert mounts.is_tmpfs(shm / "not-created-yet")
    assert mounts.fs_type(shm) == "tmpfs"


def test_disk_folder_is_not_tmpfs() -> None:
    repo = Path(__file__).resolve().parent
    if mounts.statfs_magic(repo) == mounts.TMPFS_MAGIC:
        pytest.skip("the checkout itself is on tmpfs")
    assert not mounts.is_tmpfs(repo)
    assert mounts.fs_type(repo) != "tmpfs"


def test_symlink_into_tmpfs_is_resolved(tmp_path: Path) -> None:
    link = tmp_path / "inbox"
    link.symlink_to("/dev/shm")
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    assert mounts.is_tmpfs(link)


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
    parsed = mounts.parse_mountinfo(MOUNTINFO)
    assert len(parsed) == 7
    assert parsed[3] == mounts.Mount("/mnt/my inbox", "tmpfs", "tmp fs", "rw,nosuid")

    def fstype(path: str) -> str:
        return mounts.mount_for(Path(path), mountinfo=MOUNTINFO).fstype

    assert fstype("/mnt/my inbox/a.jpg") == "tmpfs"
    assert fstype("/mnt/my inbox") == "tmpfs"
    assert fstype("/mnt/my/a.jpg") == "ext4"
    assert fstype("/mnt/myinbox") == "ext4"  # "/mnt/my" is not a prefix of this folder
    assert mounts.mount_for(Path("/mnt/myinbox"), mountinfo=MOUNTINFO).mount_point == "/"
    assert fstype("/mnt/myinbox2/x") == "vfat"
    assert fstype("/srv/inbox") == "tmpfs"  # of stacked mounts, the last is visible
    with pytest.raises(OSError):
        mounts.mount_for(Path("/x"), mountinfo="garbage\n")
