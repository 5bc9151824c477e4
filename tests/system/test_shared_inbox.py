"""A shared appliance: two members of edgeguard-drop, each with their own tools and modes.

Installed by deploy/install.sh into a booted Debian; the real service (its sandbox, its
CAP_FOWNER and CAP_LEASE) claims every arrival from the shared inbox into its private spool.
Shown here, each as a dropper would try it: a member cannot list the inbox, the spool or
failed/, nor read another member's file by name once the service has seen it (also while its
writer is still writing, whatever mode the file has); an ``rsync -r`` folder (owned by the
dropper, ``drwxr-xr-x``) is emptied and removed; nothing raw is left after delivery or
failure; a file held open by its writer is not taken half-written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nspawn
import numpy as np
import pytest
from face_images import assert_redacted

pytestmark = pytest.mark.system

UNIT = "edgeguard.service"
INBOX = "/run/edgeguard/inbox"
SPOOL = "/run/edgeguard/inbox.spool"
FAILED = "/run/edgeguard/failed"
OUTBOX = "/var/lib/edgeguard/outbox"


@pytest.fixture(scope="module")
def c(tree: Path, wheels: Path) -> Iterator[nspawn.Container]:
    src = nspawn.copy_source(tree)
    with nspawn.Container(tree, binds=[(wheels, "/wheelhouse")]) as box:
        box.run(f"{src}/deploy/install.sh", "--wheelhouse", "/wheelhouse", "--no-start",
                timeout=600)
        for user in ("alice", "carol"):
            box.run("useradd", "--create-home", "--groups", "edgeguard-drop", user)
        box.systemctl("start", UNIT)
        yield box


def ls(c: nspawn.Container, path: str) -> list[str]:
    return sorted(c.run("ls", "-A", path).stdout.split())


def tree_files(c: nspawn.Container, path: str) -> list[str]:
    out = c.run("find", path, "-mindepth", "1", check=False).stdout
    return sorted(line[len(path) + 1:] for line in out.splitlines())


def as_user(c: nspawn.Container, user: str, script: str) -> tuple[int, str]:
    r = c.run("/bin/sh", "-c", script, user=user, check=False)
    return r.returncode, r.stdout + r.stderr


def wait_outputs(c: nspawn.Container, names: list[str], timeout: float = 90) -> None:
    c.wait_for(f"{names} in the outbox",
               lambda: set(names) <= set(tree_files(c, OUTBOX)), timeout=timeout)


def wait_all_gone(c: nspawn.Container) -> None:
    """Nothing left in the inbox (files or folders) nor in the spool."""
    c.wait_for("an empty inbox and spool",
               lambda: tree_files(c, INBOX) == [] and tree_files(c, SPOOL) == [], timeout=60)


def test_the_shared_folders_cannot_be_listed_by_members(c: nspawn.Container) -> None:
    assert c.run("stat", "-c", "%a %U:%G", INBOX).stdout.split() == ["1730",
                                                                    "edgeguard:edgeguard-drop"]
    assert c.run("stat", "-c", "%a %U:%G", SPOOL).stdout.split() == ["700", "edgeguard:edgeguard"]
    for path in (INBOX, SPOOL, FAILED):
        code, out = as_user(c, "carol", f"ls {path}")
        assert code != 0 and "Permission denied" in out, (path, out)
    # A member may still create files there.
    code, out = as_user(c, "carol", f"touch {INBOX}/.probe.part && rm {INBOX}/.probe.part")
    assert code == 0, out


def test_drops_with_any_mode_are_redacted_and_nothing_raw_is_left(
        c: nspawn.Container, astronaut_jpeg: bytes, astronaut_rgb: np.ndarray) -> None:
    c.write_bytes("/tmp/face.jpg", astronaut_jpeg)
    c.run("chmod", "0644", "/tmp/face.jpg")
    # cp under the final name with the umask's mode, Samba-like 0666/0777 create masks, and
    # a private 0600 file the service can still read (it gives itself an ACL entry).
    modes = {"cp-0644.jpg": "0644", "samba-0666.jpg": "0666", "samba-0777.jpg": "0777",
             "private-0600.jpg": "0600"}
    # cp gives the new file the source's mode less the umask: umask 000 keeps it as is.
    for mode in set(modes.values()):
        c.run("install", "-o", "alice", "-m", mode, "/tmp/face.jpg", f"/tmp/face-{mode}.jpg")
    as_user(c, "alice", "umask 000; " + "".join(f"cp /tmp/face-{mode}.jpg {INBOX}/{name}; "
                                                  for name, mode in modes.items()))
    # A non-image ends in failed/, where no member can reach it either.
    as_user(c, "alice", f"echo 'not an image' > {INBOX}/broken.jpg")
    wait_outputs(c, list(modes))
    for name in modes:
        assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/{name}"))
    c.wait_for("the failure", lambda: "broken.jpg" in ls(c, FAILED))
    wait_all_gone(c)
    code, out = as_user(c, "carol", f"head -c4 {FAILED}/broken.jpg")
    assert code != 0 and "Permission denied" in out, out


def test_a_file_still_being_written_is_private_and_not_taken_half_written(
        c: nspawn.Container, astronaut_jpeg: bytes, astronaut_rgb: np.ndarray) -> None:
    half = len(astronaut_jpeg) // 2
    c.write_bytes("/tmp/face.jpg", astronaut_jpeg)
    c.run("chmod", "0644", "/tmp/face.jpg")
    c.run("rm", "-f", "/tmp/go")
    # alice writes half the file under its final name, world-readable (umask 000), and
    # keeps it open until /tmp/go appears; then writes the rest and closes it.
    writer = (f"umask 000; exec 3>{INBOX}/slow.jpg; head -c {half} /tmp/face.jpg >&3; "
              "while [ ! -e /tmp/go ]; do sleep 0.1; done; "
              f"tail -c +{half + 1} /tmp/face.jpg >&3; exec 3>&-")
    c.sh(f"runuser -u alice -- sh -c '{writer}' >/dev/null 2>&1 &")
    # Claimed at once, while open: gone from the inbox, in the private spool.
    c.wait_for("the claim", lambda: "slow.jpg" in ls(c, SPOOL))
    code, out = as_user(c, "carol", f"head -c4 {INBOX}/slow.jpg")
    assert code != 0 and "No such file" in out, out
    code, out = as_user(c, "carol", f"head -c4 {SPOOL}/slow.jpg")
    assert code != 0 and "Permission denied" in out, out
    # The writer keeps it open: the service waits (a lease says a writer has it open).
    c.run("sleep", "3")  # several stable_s (1 s) and supervisor ticks with the writer idle
    assert "slow.jpg" not in tree_files(c, OUTBOX)
    assert "slow.jpg" not in ls(c, FAILED)
    c.run("touch", "/tmp/go")
    wait_outputs(c, ["slow.jpg"])
    assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/slow.jpg"))
    assert "slow.jpg" not in ls(c, FAILED)
    wait_all_gone(c)


def test_rsync_r_folders_of_two_members_are_emptied_and_removed(
        c: nspawn.Container, astronaut_jpeg: bytes, astronaut_rgb: np.ndarray) -> None:
    for user, folder in (("alice", "batchA"), ("carol", "batchC")):
        c.run("mkdir", "-p", f"/home/{user}/{folder}/deeper")
        for i in range(3):
            c.write_bytes(f"/home/{user}/{folder}/r{i}.jpg", astronaut_jpeg)
        c.write_bytes(f"/home/{user}/{folder}/deeper/d.jpg", astronaut_jpeg)
        c.run("chown", "-R", f"{user}:{user}", f"/home/{user}/{folder}")
        c.run("chmod", "-R", "u=rwX,go=rX", f"/home/{user}/{folder}")
    # Both at once; -r with the source's modes (-p): folders arrive drwxr-xr-x, owned by
    # their dropper, which the service may not write to by its mode alone.
    c.sh("runuser -u alice -- rsync -rp /home/alice/batchA /run/edgeguard/inbox/ & "
         "runuser -u carol -- rsync -rp /home/carol/batchC /run/edgeguard/inbox/ & wait")
    names = [f"{f}/{n}" for f in ("batchA", "batchC")
             for n in ("r0.jpg", "r1.jpg", "r2.jpg", "deeper/d.jpg")]
    wait_outputs(c, names)
    for name in names:
        assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/{name}"))
    # The folders are gone from the inbox once emptied and settled; the spool is empty.
    wait_all_gone(c)
    # Nothing was left for the next start to fail on again.
    mark = c.cursor()
    c.systemctl("restart", UNIT)
    log = c.journal(UNIT, after=mark)
    assert "cannot be removed" not in log and "moved to failed/" not in log, log
    assert ls(c, FAILED) == ["broken.jpg", "broken.jpg.reason"]


def test_nothing_lost_from_the_spool_across_a_crash(c: nspawn.Container, astronaut_jpeg: bytes,
                                                     astronaut_rgb: np.ndarray) -> None:
    pid = int(c.show(UNIT, "MainPID")["MainPID"])
    assert pid > 0
    c.write_bytes("/tmp/face.jpg", astronaut_jpeg)
    c.run("chmod", "0644", "/tmp/face.jpg")
    names = [f"crash-{i}.jpg" for i in range(6)]
    as_user(c, "alice", "".join(f"cp /tmp/face.jpg {INBOX}/{n}; " for n in names))
    c.wait_for("a claim", lambda: any(n in ls(c, SPOOL) for n in names)
               or any(n in tree_files(c, OUTBOX) for n in names))
    c.run("kill", "-KILL", str(pid))
    c.wait_for("a restart", lambda: c.show(UNIT, "ActiveState")["ActiveState"] == "active"
               and int(c.show(UNIT, "MainPID")["MainPID"]) not in (0, pid), timeout=60)
    wait_outputs(c, names)
    wait_all_gone(c)
    out = tree_files(c, OUTBOX)
    assert [n for n in out if n.startswith("crash-")] == names  # exactly one each
