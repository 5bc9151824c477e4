"""The systemd unit, its tmpfiles rules, the installed config and the installer, checked
without booting anything: `systemd-analyze verify` must print nothing and
`systemd-analyze security --offline=true` must rate the unit 1.5 or lower.

The system tests (tests/system/) then run the same files in a real systemd.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edgeguard.service"
TMPFILES = REPO / "systemd" / "edgeguard.tmpfiles"
CONFIG = REPO / "deploy" / "edgeguard.toml"
INSTALL = REPO / "deploy" / "install.sh"
PREFIX = "/opt/edgeguard/"
MAX_EXPOSURE = 1.5

sys.path.insert(0, str(REPO / "tests" / "system"))
import unitfile  # noqa: E402

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def settings(section: str = "Service") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for sec, key, value in unitfile.parse(UNIT.read_text()):
        if sec == section:
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose /opt/edgeguard binaries exist (verify checks every Exec
    path), under the same name. Other paths (/bin/kill, systemd-tmpfiles) must exist here."""
    stub = tmp_path / "bin" / "edgeguard"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text().replace(PREFIX + "venv/bin/edgeguard", str(stub))
    assert PREFIX + "venv" not in text, "an Exec line uses another program from the venv"
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, check=False)


@needs_analyze
def test_verify_prints_nothing(checkable_unit: Path) -> None:
    r = analyze("verify", "--man=no", "--generators=no", str(checkable_unit))
    # verify only warns (and exits 0) for a misspelt key: any output at all is a failure.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@needs_analyze
def test_verify_would_catch_a_misspelt_key(checkable_unit: Path) -> None:
    """The check above can fail: a typo in a hardening key makes verify speak."""
    checkable_unit.write_text(checkable_unit.read_text().replace("ProtectHome=", "ProtectHom="))
    r = analyze("verify", "--man=no", "--generators=no", str(checkable_unit))
    assert "ProtectHom" in r.stdout + r.stderr


def exposure(unit: Path) -> tuple[float, str]:
    r = analyze("security", "--offline=true", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1)), r.stdout


@needs_analyze
def test_security_exposure_at_most_1_5(checkable_unit: Path) -> None:
    score, report = exposure(checkable_unit)
    assert score <= MAX_EXPOSURE, report
    # The same through the exit code (the threshold is on a 0-100 scale).
    r = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}",
                "--no-pager", str(checkable_unit))
    assert r.returncode == 0, r.stdout


@needs_analyze
def test_security_report_shows_no_network_and_no_privileges(checkable_unit: Path) -> None:
    _, report = exposure(checkable_unit)
    passed = {line.split()[1] for line in report.splitlines() if line.startswith("✓")}
    for item in ("PrivateNetwork=", "IPAddressDeny=", "RestrictAddressFamilies=~AF_(INET|INET6)",
                 "RestrictAddressFamilies=~AF_PACKET", "RestrictAddressFamilies=~AF_NETLINK",
                 "User=/DynamicUser=", "NoNewPrivileges=", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
                 "ProtectSystem=", "ProtectHome=", "PrivateTmp=",
                 "SystemCallFilter=~@privileged", "SystemCallArchitectures=",
                 "MemoryDenyWriteExecute=", "NotifyAccess="):
        assert item in passed, f"{item} not satisfied:\n{report}"


@needs_analyze
def test_security_score_responds_to_a_weaker_unit(checkable_unit: Path) -> None:
    """The score check can fail: dropping the network locks raises the exposure."""
    good, _ = exposure(checkable_unit)
    text = checkable_unit.read_text()
    for key in ("PrivateNetwork=yes", "IPAddressDeny=any", "RestrictAddressFamilies=AF_UNIX"):
        text = text.replace(key + "\n", "")
    checkable_unit.write_text(text)
    weak, _ = exposure(checkable_unit)
    assert weak > good


def test_lifecycle_settings() -> None:
    s = settings()
    unit = settings("Unit")
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert "WatchdogSec" in s and "TimeoutStopSec" in s
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit
    # The config is validated first: a broken one fails `systemctl reload` visibly.
    assert s["ExecReload"] == [PREFIX + "venv/bin/edgeguard check --config-only --config "
                               "/etc/edgeguard/edgeguard.toml", "/bin/kill -HUP $MAINPID"]
    assert any(v.endswith("edgeguard check --config /etc/edgeguard/edgeguard.toml")
               for v in s["ExecStartPre"])
    assert s["ExecStart"] == [PREFIX + "venv/bin/edgeguard run --config "
                              "/etc/edgeguard/edgeguard.toml"]
    # The tmpfs inbox and failed/ survive restarts: nothing queued is lost.
    assert s["RuntimeDirectory"] == ["edgeguard"]
    assert s["RuntimeDirectoryPreserve"] == ["yes"]
    assert s["StateDirectory"] == ["edgeguard"]
    assert s["ConfigurationDirectory"] == ["edgeguard"]
    # A core file would put raw pixels on disk.
    assert s["LimitCORE"] == ["0"]


def test_hardening_settings() -> None:
    s = settings()
    expect = {
        "PrivateNetwork": "yes", "IPAddressDeny": "any", "RestrictAddressFamilies": "AF_UNIX",
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        # CAP_FOWNER (ACL entries on drops) and CAP_LEASE (writer closed?) only; in the
        # host's user namespace, where they act on the droppers' files.
        "CapabilityBoundingSet": "CAP_FOWNER CAP_LEASE",
        "AmbientCapabilities": "CAP_FOWNER CAP_LEASE", "PrivateUsers": "no",
        "SupplementaryGroups": "video",
        "DevicePolicy": "closed", "SystemCallArchitectures": "native",
        "User": "edgeguard",
    }
    for key, value in expect.items():
        assert s.get(key) == [value], key
    assert s["DeviceAllow"] == ["char-video4linux rw", "char-media rw", "char-dma_heap rw"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert "PrivateDevices" not in s  # it would hide the camera nodes
    # TFLite's XNNPACK reads /proc/cpuinfo: ProcSubset=pid disables it (the system test's
    # sandbox probe shows "Error in cpuinfo" when it is set).
    assert "ProcSubset" not in s


def test_timeouts_cover_the_daemon_drain() -> None:
    """systemd must not SIGKILL a drain the daemon is allowed to take."""
    from edgeguard import config

    cfg = config.load(CONFIG)
    stop = settings()["TimeoutStopSec"][0]
    m = re.fullmatch(r"(\d+)(s|min)", stop)
    assert m, stop
    seconds = int(m.group(1)) * (60 if m.group(2) == "min" else 1)
    assert seconds > cfg.daemon.drain_s + 5
    watchdog = int(settings()["WatchdogSec"][0].rstrip("s"))
    # The daemon pings at a quarter of the period; a hung worker is declared after stuck_s.
    assert watchdog >= 10


def test_installed_config_matches_the_unit() -> None:
    """deploy/edgeguard.toml is valid and its folders are the unit's."""
    from edgeguard import config

    cfg = config.load(CONFIG)
    d = cfg.daemon
    assert d.inbox == "/run/edgeguard/inbox"  # RuntimeDirectory=edgeguard: tmpfs
    assert d.failed == "/run/edgeguard/failed"
    assert d.outbox.startswith("/var/lib/edgeguard/")  # StateDirectory=edgeguard
    assert cfg.detect.models_dir == PREFIX + "models"
    tmpfiles = TMPFILES.read_text()
    assert f" {d.inbox} " in tmpfiles and f" {d.failed} " in tmpfiles


def tmpfiles_entries() -> dict[str, tuple[str, str, str, str]]:
    out = {}
    for line in TMPFILES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, path, mode, user, group, _age = line.split()
            out[path] = (kind, mode, user, group)
    return out


def test_tmpfiles_layout_is_the_drop_design() -> None:
    e = tmpfiles_entries()
    # Anyone may pass through to the inbox, nobody else may list the runtime folder.
    assert e["/run/edgeguard"] == ("d", "0711", "edgeguard", "edgeguard")
    # Droppers create, nothing else: no listing (group -wx), sticky (no dropper deletes
    # another's file), no setgid (a file keeps its writer's own group, not a shared one).
    assert e["/run/edgeguard/inbox"] == ("d", "1730", "edgeguard", "edgeguard-drop")
    # Arrivals are claimed into the spool at once: the service's alone.
    assert e["/run/edgeguard/inbox.spool"] == ("d", "0700", "edgeguard", "edgeguard")
    # Raw images that failed are the service's alone.
    assert e["/run/edgeguard/failed"] == ("d", "0700", "edgeguard", "edgeguard")
    assert settings()["RuntimeDirectoryMode"] == ["0711"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-tmpfiles") is None,
                    reason="needs root and systemd-tmpfiles")
def test_tmpfiles_creates_the_layout(tmp_path: Path) -> None:
    """systemd-tmpfiles accepts the file and makes exactly the modes and groups above."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                         "edgeguard:x:990:990::/:/usr/sbin/nologin\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nedgeguard:x:990:\nedgeguard-drop:x:991:\n")
    r = subprocess.run(["systemd-tmpfiles", "--create", f"--root={tmp_path}", str(TMPFILES)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    for path, (_, mode, _user, group) in tmpfiles_entries().items():
        st = (tmp_path / path.lstrip("/")).stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid) == (oct(int(mode, 8)), 990), path
        assert st.st_gid == (991 if group == "edgeguard-drop" else 990), path


def test_install_script_parses() -> None:
    r = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert os.access(INSTALL, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_install_script_shellcheck() -> None:
    r = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout


def test_install_script_refuses_non_root() -> None:
    if os.geteuid() == 0:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "bash", str(INSTALL), "--no-start"],
                           capture_output=True, text=True, check=False)
    else:
        r = subprocess.run(["bash", str(INSTALL), "--no-start"], capture_output=True,
                           text=True, check=False)
    assert r.returncode != 0
    assert "run as root" in r.stderr


def test_install_script_help_and_bad_option() -> None:
    ok = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0 and "--wheelhouse" in ok.stdout and "--purge" in ok.stdout
    bad = subprocess.run(["bash", str(INSTALL), "--frobnicate"], capture_output=True,
                         text=True, check=False)
    assert bad.returncode != 0 and "unknown option: --frobnicate" in bad.stderr
