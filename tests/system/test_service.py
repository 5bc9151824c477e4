"""EdgeGuard as a real systemd service, installed by deploy/install.sh into a booted Debian.

One container for the module; the tests run in file order and each leaves the service as
the next expects (stopped at the start, running after the start test).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nspawn
import numpy as np
import pytest
import unitfile
from face_images import FACE, assert_redacted, decode, encode

pytestmark = pytest.mark.system

UNIT = "edgeguard.service"
INBOX = "/run/edgeguard/inbox"
FAILED = "/run/edgeguard/failed"
SPOOL = "/run/edgeguard/inbox.spool"
OUTBOX = "/var/lib/edgeguard/outbox"
CONFIG = "/etc/edgeguard/edgeguard.toml"
VENV_PY = "/opt/edgeguard/venv/bin/python"
DROPIN = "/etc/systemd/system/edgeguard.service.d/50-test.conf"
HANG = "/usr/local/lib/edgeguard-test/hang.py"  # readable by the service (not under /root)
UNIT_FILE = nspawn.REPO / "systemd" / UNIT


@pytest.fixture(scope="module")
def c(tree: Path, wheels: Path) -> Iterator[nspawn.Container]:
    src = nspawn.copy_source(tree)
    with nspawn.Container(tree, binds=[(wheels, "/wheelhouse")]) as box:
        r = box.run(f"{src}/deploy/install.sh", "--wheelhouse", "/wheelhouse", "--no-start",
                    timeout=600)
        assert "installed and enabled" in r.stdout
        # alice may drop files; bob is just another user on the box.
        box.run("useradd", "--create-home", "--groups", "edgeguard-drop", "alice")
        box.run("useradd", "--create-home", "bob")
        yield box


# -- helpers ---------------------------------------------------------------------------------

def drop(c: nspawn.Container, name: str, data: bytes, user: str = "alice") -> None:
    """Drop a file the way scp/rsync should: a hidden temporary name, then a rename."""
    c.run("/bin/sh", "-ec", 'cat > "$1/.$2.part"; mv "$1/.$2.part" "$1/$2"', "drop", INBOX, name,
          input=data, user=user)


def ls(c: nspawn.Container, path: str) -> list[str]:
    return sorted(c.run("ls", "-A", path).stdout.split())


def wait_outputs(c: nspawn.Container, names: list[str], timeout: float = 60) -> None:
    c.wait_for(f"{names} in the outbox", lambda: set(names) <= set(ls(c, OUTBOX)),
               timeout=timeout)


def main_pid(c: nspawn.Container) -> int:
    return int(c.show(UNIT, "MainPID")["MainPID"])


def write_config(c: nspawn.Container, extra: str = "") -> None:
    """The installed default config plus ``extra`` TOML lines (appended sections)."""
    base = (nspawn.REPO / "deploy" / "edgeguard.toml").read_text()
    c.write_bytes(CONFIG, (base + "\n" + extra).encode())


def active(c: nspawn.Container) -> bool:
    s = c.show(UNIT, "ActiveState", "SubState")
    return (s["ActiveState"], s["SubState"]) == ("active", "running")


# -- install -------------------------------------------------------------------------------

def test_install_again_is_idempotent_and_keeps_the_config(c: nspawn.Container) -> None:
    c.sh(f"echo '# edited by the operator' >> {CONFIG}")
    r = c.run("/root/edgeguard/deploy/install.sh", "--wheelhouse", "/wheelhouse", "--no-start",
              timeout=600)
    assert f"keeping the existing {CONFIG}" in r.stdout
    assert "# edited by the operator" in c.read_bytes(CONFIG).decode()
    assert c.read_bytes(CONFIG + ".dist") == (nspawn.REPO / "deploy/edgeguard.toml").read_bytes()
    assert "models" in r.stdout and "present and verified" in r.stderr + r.stdout
    # The accounts: a system user in video; not in the drop group (it reads nothing through
    # it: arrivals are claimed into its private spool).
    groups = c.run("id", "-nG", "edgeguard").stdout.split()
    assert {"edgeguard", "video"} <= set(groups) and "edgeguard-drop" not in groups
    assert c.show(UNIT, "UnitFileState")["UnitFileState"] == "enabled"
    # Only the installer's own lines: no apt progress, debconf notes or log lines.
    for line in r.stdout.splitlines():
        assert line.startswith("edgeguard-install: "), r.stdout
    # rsync (the README's drop command needs it on this end) and edgeguard on root's PATH.
    assert c.run("rsync", "--version").returncode == 0
    assert c.run("edgeguard", "--version").stdout.startswith("edgeguard ")
    write_config(c)


def test_check_without_config_checks_the_installed_config_and_creates_nothing(
        c: nspawn.Container) -> None:
    c.run("mkdir", "-p", "/root/somewhere")
    r = c.run("sh", "-c", "cd /root/somewhere && edgeguard check", check=False)
    assert f"ok   config: {CONFIG} is valid" in r.stdout, r.stdout
    # It looked at the installed folders, not the built-in defaults (./outbox, /dev/shm).
    assert f"outbox {OUTBOX}" in r.stdout and f"inbox {INBOX}" in r.stdout, r.stdout
    assert ls(c, "/root/somewhere") == []


def test_installed_unit_verifies_clean_and_rates_safe(c: nspawn.Container) -> None:
    """The unit as systemd loaded it on the target (real binaries, real users)."""
    r = c.run("systemd-analyze", "verify", UNIT, check=False)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    r = c.run("systemd-analyze", "security", "--no-pager", "--threshold=15", UNIT, check=False)
    assert r.returncode == 0, r.stdout
    assert "Overall exposure level for edgeguard.service: 0." in r.stdout, r.stdout


# -- lifecycle ---------------------------------------------------------------------------------

def test_start_returns_only_after_ready(c: nspawn.Container, astronaut_jpeg: bytes,
                                        astronaut_rgb: np.ndarray) -> None:
    assert c.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
    # The inbox exists while the service is stopped (tmpfiles); a file queued now is found
    # by the scan at start.
    drop(c, "queued-before-start.jpg", astronaut_jpeg)
    mark = c.cursor()
    c.systemctl("start", UNIT)
    s = c.show(UNIT, "ActiveState", "SubState", "StatusText", "Type")
    assert (s["ActiveState"], s["SubState"], s["Type"]) == ("active", "running", "notify")
    assert s["StatusText"].startswith("processed "), s  # sent together with READY=1
    # The models were loaded before systemd took the service as started.
    log = c.journal(after=mark)
    assert "pipeline ready" in log and "Started edgeguard.service" in log, log
    assert log.index("pipeline ready") < log.index("Started edgeguard.service"), log
    wait_outputs(c, ["queued-before-start.jpg"])
    assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/queued-before-start.jpg"))


def test_drop_group_member_gets_a_redacted_copy(c: nspawn.Container, astronaut_jpeg: bytes,
                                                astronaut_rgb: np.ndarray) -> None:
    drop(c, "scp-style.jpg", astronaut_jpeg)
    # The documented rsync command: temporary name, rename, source removed afterwards.
    c.write_bytes("/home/alice/rsync-style.jpg", astronaut_jpeg, user="alice")
    c.run("rsync", "--remove-source-files", "--chmod=F640", "/home/alice/rsync-style.jpg",
          f"{INBOX}/", user="alice")
    wait_outputs(c, ["scp-style.jpg", "rsync-style.jpg"])
    for name in ("scp-style.jpg", "rsync-style.jpg"):
        assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/{name}"))
    assert c.run("test", "-e", "/home/alice/rsync-style.jpg", check=False).returncode != 0
    c.wait_for("an empty inbox", lambda: ls(c, INBOX) == [])
    assert ls(c, FAILED) == []
    # Outputs: the service's, readable by its group, by nobody else.
    st = c.run("stat", "-c", "%U:%G %a", f"{OUTBOX}/scp-style.jpg").stdout.split()
    assert st == ["edgeguard:edgeguard", "640"]


def test_inbox_is_tmpfs_and_droppers_can_only_drop(c: nspawn.Container) -> None:
    for path in (INBOX, FAILED):
        assert c.run("stat", "-f", "-c", "%T", path).stdout.strip() == "tmpfs", path
    # A drop group member: may write the inbox, nothing else.
    assert c.run("ls", FAILED, user="alice", check=False).returncode != 0
    assert c.run("touch", f"{OUTBOX}/x", user="alice", check=False).returncode != 0
    assert c.run("ls", OUTBOX, user="alice", check=False).returncode != 0
    assert c.run("touch", "/run/edgeguard/x", user="alice", check=False).returncode != 0
    # Not a member: cannot drop at all.
    r = c.run("/bin/sh", "-c", f"echo x > {INBOX}/bob.jpg", user="bob", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_undecodable_drop_fails_closed_into_private_failed(c: nspawn.Container) -> None:
    drop(c, "not-an-image.jpg", b"this is not a JPEG\n")
    c.wait_for("failed/ entry", lambda: "not-an-image.jpg" in ls(c, FAILED))
    assert "not-an-image.jpg.reason" in ls(c, FAILED)
    assert not [n for n in ls(c, OUTBOX) if n.startswith("not-an-image")]
    # The dropper cannot look into failed/ (it may hold other people's raw images).
    r = c.run("cat", f"{FAILED}/not-an-image.jpg", user="alice", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    c.sh(f"rm {FAILED}/not-an-image.jpg {FAILED}/not-an-image.jpg.reason")  # the operator


# -- the sandbox -----------------------------------------------------------------------------

SOCKET_PROBE = """
import errno, json, socket
out = {}
for name, fam, kind, to in (("inet", socket.AF_INET, socket.SOCK_STREAM, None),
                            ("inet6", socket.AF_INET6, socket.SOCK_STREAM, None),
                            ("udp_loopback", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 9)),
                            ("unix", socket.AF_UNIX, socket.SOCK_DGRAM, None)):
    try:
        s = socket.socket(fam, kind)
        if to:
            s.sendto(b"x", to)
        out[name] = "ok"
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(out))
"""


def probe(c: nspawn.Container, props: list[str],
          code: str) -> subprocess.CompletedProcess[str]:
    return c.run("systemd-run", "--wait", "--pipe", "--quiet", *props, VENV_PY, "-c", code,
                 check=False, timeout=120)


def test_service_cannot_open_a_network_socket(c: nspawn.Container) -> None:
    # The running service: CAP_FOWNER (bit 3) and CAP_LEASE (bit 28) and nothing else, not
    # even in its bounding set; no new privileges; a seccomp filter.
    status = c.read_bytes(f"/proc/{main_pid(c)}/status").decode()
    assert "NoNewPrivs:\t1" in status
    assert "Seccomp:\t2" in status
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert f"{key}:\t{(1 << 3) | (1 << 28):016x}" in status, status
    # A probe under the unit's own [Service] settings (read from systemd/edgeguard.service).
    props = unitfile.probe_properties(UNIT_FILE)
    r = probe(c, props, SOCKET_PROBE)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["inet"] == got["inet6"] == "EAFNOSUPPORT", got
    assert got["unix"] == "ok", got  # sd_notify and the journal still work
    # Without RestrictAddressFamilies= the next lock holds: IPAddressDeny= drops even loopback.
    no_families = unitfile.probe_properties(UNIT_FILE, without=("RestrictAddressFamilies",))
    r = probe(c, no_families, SOCKET_PROBE)
    got = json.loads(r.stdout or "{}")
    assert got.get("inet") == "ok" and got.get("udp_loopback") == "EPERM", (got, r.stderr)
    # The control: outside the sandbox the same probe does reach the network stack.
    r = probe(c, [], SOCKET_PROBE)
    got = json.loads(r.stdout or "{}")
    assert got.get("inet") == "ok" and got.get("udp_loopback") == "ok", (got, r.stderr)


STACK_PROBE = """
import io, numpy as np, cv2, PIL.Image
from ai_edge_litert.interpreter import Interpreter
from watchdog.observers.inotify import InotifyObserver
from watchdog.events import FileSystemEventHandler
it = Interpreter(model_path="/opt/edgeguard/models/face_detection_full_range.tflite", num_threads=2)
it.allocate_tensors()
inp = it.get_input_details()[0]
it.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
it.invoke()
img = np.zeros((64, 64, 3), np.uint8)
assert cv2.imencode(".jpg", cv2.GaussianBlur(img, (9, 9), 0))[0]
PIL.Image.fromarray(img).save(io.BytesIO(), "PNG")
o = InotifyObserver(); o.schedule(FileSystemEventHandler(), "/tmp"); o.start(); o.stop(); o.join()
print("stack ok")
"""


def test_runtime_stack_works_in_the_sandbox(c: nspawn.Container) -> None:
    """TFLite with XNNPACK, OpenCV, Pillow and inotify under the unit's settings: nothing
    killed by MemoryDenyWriteExecute= or the system-call filter, and XNNPACK really on
    (ProcSubset=pid hides /proc/cpuinfo and XNNPACK's cpuinfo then fails)."""
    r = probe(c, unitfile.probe_properties(UNIT_FILE), STACK_PROBE)
    assert r.returncode == 0 and "stack ok" in r.stdout, r.stderr
    assert "XNNPACK delegate" in r.stderr, r.stderr
    assert "Error in cpuinfo" not in r.stderr, r.stderr
    # The check can fail: with ProcSubset=pid added, cpuinfo breaks.
    bad = probe(c, [*unitfile.probe_properties(UNIT_FILE), "-p", "ProcSubset=pid"], STACK_PROBE)
    assert "Error in cpuinfo" in bad.stderr


# -- failure and recovery ------------------------------------------------------------------------

def test_kill_9_restarts_and_loses_nothing(c: nspawn.Container, astronaut_jpeg: bytes,
                                           astronaut_rgb: np.ndarray) -> None:
    before = c.show(UNIT, "NRestarts", "MainPID")
    pid = int(before["MainPID"])
    assert pid > 0, "the service is not running"  # kill 0 would signal the whole group
    # Freeze the daemon so that the files are certainly queued, not done, when it dies.
    c.run("kill", "-STOP", str(pid))
    names = [f"crash-{i}.jpg" for i in range(4)]
    for name in names:
        drop(c, name, astronaut_jpeg)
    c.run("kill", "-KILL", str(pid))
    c.wait_for("a restart", lambda: int(c.show(UNIT, "NRestarts")["NRestarts"])
               == int(before["NRestarts"]) + 1 and active(c), timeout=60)
    assert main_pid(c) != pid
    wait_outputs(c, names)
    c.wait_for("an empty inbox", lambda: ls(c, INBOX) == [])
    assert ls(c, FAILED) == []
    out = ls(c, OUTBOX)
    # Exactly one output per input: no "crash-0-1.jpg" duplicates, no temporary files.
    assert [n for n in out if n.startswith("crash-")] == names
    assert not [n for n in out if n.startswith(".")]
    for name in names:
        assert_redacted(astronaut_rgb, c.read_bytes(f"{OUTBOX}/{name}"))


def test_hung_worker_leads_to_a_watchdog_restart(c: nspawn.Container,
                                                astronaut_jpeg: bytes) -> None:
    # The installed daemon started through the tests' launcher (helpers/hang.py): a worker
    # hangs on files named like this; pings stop once a worker is busy longer than stuck_s.
    # A short WatchdogSec keeps the test quick.
    c.run("mkdir", "-p", str(Path(DROPIN).parent), str(Path(HANG).parent))
    c.write_bytes(HANG, (nspawn.REPO / "tests" / "helpers" / "hang.py").read_bytes())
    c.write_bytes(DROPIN, f"[Service]\nExecStart=\nExecStart={VENV_PY} {HANG} hang-me run "
                          f"--config {CONFIG}\nWatchdogSec=6s\n".encode())
    _set_daemon_keys(c, stuck_s=2.0, drain_s=2.0)
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT)
    before = int(c.show(UNIT, "NRestarts")["NRestarts"])
    mark = c.cursor()
    drop(c, "hang-me.jpg", astronaut_jpeg)

    def restarted_by_watchdog() -> bool:
        log = c.journal(after=mark)
        return ("Watchdog timeout" in log
                and int(c.show(UNIT, "NRestarts")["NRestarts"]) > before)

    c.wait_for("a watchdog restart", restarted_by_watchdog, timeout=90)
    log = c.journal(after=mark)
    assert "stuck on hang-me.jpg" in log, log
    assert "Failed with result 'watchdog'" in log, log
    # Nothing lost: without the launcher the file is processed after the next start.
    c.run("rm", DROPIN, HANG)
    write_config(c)
    c.systemctl("daemon-reload")
    c.systemctl("restart", UNIT)
    wait_outputs(c, ["hang-me.jpg"])
    assert ls(c, FAILED) == []


def _set_daemon_keys(c: nspawn.Container, **values: float) -> None:
    """The default config with extra keys in its [daemon] section."""
    text = (nspawn.REPO / "deploy" / "edgeguard.toml").read_text()
    lines = "".join(f"{k} = {v}\n" for k, v in values.items())
    assert "\n[daemon]\n" in text
    c.write_bytes(CONFIG, text.replace("\n[daemon]\n", f"\n[daemon]\n{lines}").encode())


def test_reload_applies_a_config_change(c: nspawn.Container, astronaut_png: bytes) -> None:
    pid = main_pid(c)
    text = (nspawn.REPO / "deploy" / "edgeguard.toml").read_text()
    assert 'mode = "blur"' in text
    text = text.replace('mode = "blur"', 'mode = "solid"\ncolor = [255, 0, 255]')
    text = text.replace('shape = "ellipse"', 'shape = "box"')
    c.write_bytes(CONFIG, text.encode())
    mark = c.cursor()
    c.systemctl("reload", UNIT)
    c.wait_for("the reload", lambda: "reload: applied" in c.journal(UNIT, after=mark))
    assert main_pid(c) == pid  # a reload, not a restart
    drop(c, "after-reload.png", astronaut_png)
    wait_outputs(c, ["after-reload.png"])
    out = decode(c.read_bytes(f"{OUTBOX}/after-reload.png"))
    # PNG is lossless: the whole face is exactly the new fill colour.
    assert (out[FACE] == np.array([255, 0, 255])).all()
    write_config(c)
    c.systemctl("reload", UNIT)


def test_reload_with_a_broken_config_fails_visibly(c: nspawn.Container) -> None:
    pid = main_pid(c)
    write_config(c, "[daemon]\nworkers = 0\n")  # a second [daemon] table: invalid TOML
    mark = c.cursor()
    r = c.systemctl("reload", UNIT, check=False)
    assert r.returncode != 0, r
    log = c.journal(UNIT, after=mark)
    assert "FAIL config" in log, log
    assert "Reloaded" not in log, log
    # The daemon was not signalled and runs on with its config.
    assert main_pid(c) == pid and active(c)
    write_config(c)
    c.systemctl("reload", UNIT)


def test_stop_drains_and_exits_cleanly(c: nspawn.Container, astronaut_rgb: np.ndarray) -> None:
    # Bigger images (2048x2048) so that some are in progress when the stop comes.
    big = encode(np.kron(astronaut_rgb, np.ones((4, 4, 1), np.uint8)), "JPEG")
    names = [f"stop-{i}.jpg" for i in range(6)]
    script = "".join(f'cat /tmp/big.jpg > "{INBOX}/.{n}.part"; mv "{INBOX}/.{n}.part" '
                     f'"{INBOX}/{n}"; ' for n in names)
    c.write_bytes("/tmp/big.jpg", big)
    c.sh(script)
    mark = c.cursor()
    c.systemctl("stop", UNIT)
    s = c.show(UNIT, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # ExecMainCode 1 is CLD_EXITED: the daemon exited by itself, with 0, after draining.
    assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                 "ExecMainStatus": "0"}, s
    log = c.journal(UNIT, after=mark)
    assert "stopped: " in log, log
    # Every file is either done or still queued (claimed into the spool), never both,
    # never half-written.
    out, inbox = set(ls(c, OUTBOX)), set(ls(c, INBOX)) | set(ls(c, SPOOL))
    for name in names:
        assert (name in out) != (name in inbox), (name, out, inbox)
    assert not [n for n in out if n.startswith(".")]
    assert ls(c, FAILED) == []
    # And the rest is done after the next start.
    c.systemctl("start", UNIT)
    wait_outputs(c, names, timeout=120)
    c.wait_for("an empty inbox", lambda: ls(c, INBOX) == [])
    c.systemctl("stop", UNIT)


# -- uninstall --------------------------------------------------------------------------------

def test_reinstall_says_it_restarts(c: nspawn.Container) -> None:
    c.systemctl("start", UNIT)
    pid = main_pid(c)
    r = c.run("/root/edgeguard/deploy/install.sh", "--wheelhouse", "/wheelhouse", timeout=600)
    assert "restarting edgeguard" in r.stdout, r.stdout
    assert active(c) and main_pid(c) != pid


def test_uninstall_keeps_the_outbox_and_purge_removes_everything(c: nspawn.Container) -> None:
    c.systemctl("start", UNIT)
    r = c.run("/root/edgeguard/deploy/install.sh", "--uninstall")
    assert "kept /var/lib/edgeguard" in r.stdout
    assert c.show(UNIT, "LoadState")["LoadState"] == "not-found"
    for gone in ("/opt/edgeguard", "/etc/edgeguard", "/etc/systemd/system/edgeguard.service",
                 "/etc/tmpfiles.d/edgeguard.conf", "/run/edgeguard"):
        assert c.run("test", "-e", gone, check=False).returncode != 0, gone
    assert "scp-style.jpg" in ls(c, OUTBOX)
    assert c.run("test", "-e", "/usr/local/bin/edgeguard", check=False).returncode != 0
    r = c.run("/root/edgeguard/deploy/install.sh", "--uninstall", "--purge")
    assert c.run("test", "-e", "/var/lib/edgeguard", check=False).returncode != 0
    for name, db in (("edgeguard", "passwd"), ("edgeguard-drop", "group")):
        assert c.run("getent", db, name, check=False).returncode != 0, name
    # It says what it removed, and no tool complains about what it did not.
    assert r.stderr == "", r.stderr
    assert "purged /var/lib/edgeguard, the user edgeguard" in r.stdout, r.stdout
    assert "the group edgeguard-drop" in r.stdout, r.stdout
    # A second purge has nothing to do, and says so.
    r = c.run("/root/edgeguard/deploy/install.sh", "--uninstall", "--purge")
    assert r.stderr == "" and "nothing left to purge" in r.stdout, r
    assert "removed" not in r.stdout and "stopped" not in r.stdout, r.stdout
