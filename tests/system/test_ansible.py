"""The Ansible role, run against a fresh booted Debian: the same service as install.sh.

ansible-core runs inside the container with connection=local (the controller and the
appliance are one machine here; over ssh the role does the same steps), installed offline
from the wheelhouse like everything else.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import nspawn
import numpy as np
import pytest
from face_images import FACE, assert_redacted, decode

pytestmark = pytest.mark.system

UNIT = "edgeguard.service"
INBOX = "/run/edgeguard/inbox"
OUTBOX = "/var/lib/edgeguard/outbox"
CONFIG = "/etc/edgeguard/edgeguard.toml"
SRC = "/root/edgeguard"
INVENTORY = ("[edgeguard]\n"
             "appliance ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")


@pytest.fixture(scope="module")
def c(tree: Path, wheels: Path) -> Iterator[nspawn.Container]:
    nspawn.copy_source(tree, SRC)
    with nspawn.Container(tree, binds=[(wheels, "/wheelhouse")]) as box:
        box.run("python3", "-m", "venv", "/opt/ansible")
        box.run("/opt/ansible/bin/pip", "install", "-q", "--disable-pip-version-check",
                "--no-index", "--find-links", "/wheelhouse", "ansible-core", timeout=300)
        box.write_bytes("/root/inventory.ini", INVENTORY.encode())
        yield box


def playbook(c: nspawn.Container, *args: str, check: bool = True,
             **extra: object) -> subprocess.CompletedProcess[str]:
    """ansible-playbook site.yml from deploy/ansible (so its ansible.cfg applies)."""
    variables = {"edgeguard_wheelhouse": "/wheelhouse", "edgeguard_apt_update_cache": False,
                 "edgeguard_drop_users": ["carol"], **extra}
    r = c.run("/bin/sh", "-c", 'cd "$0" && exec /opt/ansible/bin/ansible-playbook "$@"',
              f"{SRC}/deploy/ansible", "-i", "/root/inventory.ini", "site.yml",
              "-e", json.dumps(variables), *args,
              env={"ANSIBLE_NOCOLOR": "1"}, check=False, timeout=900)
    if check:
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    return r


def recap(out: str) -> dict[str, int]:
    m = re.search(r"^appliance\s+:\s+(.*)$", out, re.MULTILINE)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def drop(c: nspawn.Container, name: str, data: bytes, user: str) -> None:
    c.run("/bin/sh", "-ec", 'cat > "$1/.$2.part"; mv "$1/.$2.part" "$1/$2"', "drop", INBOX, name,
          input=data, user=user)


def wait_output(c: nspawn.Container, name: str) -> bytes:
    c.wait_for(f"{name} in the outbox", lambda: c.run("test", "-f", f"{OUTBOX}/{name}",
                                                      check=False).returncode == 0)
    return c.read_bytes(f"{OUTBOX}/{name}")


def main_pid(c: nspawn.Container) -> int:
    return int(c.show(UNIT, "MainPID")["MainPID"])


def test_playbook_installs_a_running_service(c: nspawn.Container, astronaut_jpeg: bytes,
                                             astronaut_rgb: np.ndarray) -> None:
    out = playbook(c, edgeguard_config={"redact": {"mode": "pixelate"}}).stdout
    assert recap(out)["failed"] == 0
    s = c.show(UNIT, "ActiveState", "SubState", "UnitFileState")
    assert s == {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled"}
    # The config: the shipped defaults with the override, nothing else.
    want = tomllib.loads((nspawn.REPO / "deploy" / "edgeguard.toml").read_text())
    want["redact"]["mode"] = "pixelate"
    assert tomllib.loads(c.read_bytes(CONFIG).decode()) == want
    # The drop user the role created can drop; the result is redacted.
    assert "edgeguard-drop" in c.run("id", "-nG", "carol").stdout.split()
    # As install.sh: the service reads drops from its spool, not through the drop group;
    # rsync and edgeguard are on the admin's PATH.
    assert "edgeguard-drop" not in c.run("id", "-nG", "edgeguard").stdout.split()
    assert c.run("edgeguard", "--version").stdout.startswith("edgeguard ")
    assert c.run("rsync", "--version").returncode == 0
    drop(c, "via-ansible.jpg", astronaut_jpeg, user="carol")
    assert_redacted(astronaut_rgb, wait_output(c, "via-ansible.jpg"))


def test_second_run_changes_nothing(c: nspawn.Container) -> None:
    pid = main_pid(c)
    out = playbook(c, edgeguard_config={"redact": {"mode": "pixelate"}}).stdout
    assert recap(out)["changed"] == 0, out[-6000:]
    assert main_pid(c) == pid


def test_config_change_reloads_without_restart(c: nspawn.Container,
                                               astronaut_png: bytes) -> None:
    pid = main_pid(c)
    mark = c.cursor()
    out = playbook(c, edgeguard_config={"redact": {"mode": "solid", "shape": "box",
                                                    "color": [0, 255, 0]}}).stdout
    assert "RUNNING HANDLER [edgeguard : Reload edgeguard]" in out
    assert "RUNNING HANDLER [edgeguard : Restart edgeguard]" not in out
    c.wait_for("the reload", lambda: "reload: applied" in c.journal(UNIT, after=mark))
    assert main_pid(c) == pid
    drop(c, "after-change.png", astronaut_png, user="carol")
    out_img = decode(wait_output(c, "after-change.png"))
    assert (out_img[FACE] == np.array([0, 255, 0])).all()


def test_bad_config_value_is_refused_before_the_service_sees_it(c: nspawn.Container) -> None:
    before = c.read_bytes(CONFIG)
    r = playbook(c, "--start-at-task", "edgeguard : Write the config from the variables",
                 check=False, edgeguard_config={"redact": {"expand": 99}})
    assert r.returncode != 0
    # The package's own config loader refused it, naming the key.
    assert "redact.expand" in r.stdout, r.stdout[-4000:]
    assert c.read_bytes(CONFIG) == before
    assert c.show(UNIT, "ActiveState")["ActiveState"] == "active"
