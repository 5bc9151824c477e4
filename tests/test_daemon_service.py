"""service.py: sd_notify over a real datagram socket, the watchdog period, journal detection."""

from __future__ import annotations

import logging
import os
import socket
import sys
import types
import uuid
from pathlib import Path

import pytest

from edgeguard import service


def _bound(addr: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(2)
    return sock


def test_notify_datagram_reaches_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with _bound(str(path)) as sock:
        assert service.notify_datagram("READY=1\nSTATUS=hi", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(1024) == b"READY=1\nSTATUS=hi"


def test_notify_datagram_reaches_an_abstract_socket() -> None:
    name = f"edgeguard-test-{uuid.uuid4().hex}"
    with _bound(b"\0" + name.encode()) as sock:
        assert service.notify_datagram("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(1024) == b"WATCHDOG=1"


def test_notify_is_a_noop_outside_systemd() -> None:
    assert service.notify_datagram("READY=1", {}) is False


def test_notify_to_a_missing_socket_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ok = service.notify_datagram("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert ok is False
    assert "sd_notify" in caplog.text


def test_notify_prefers_python_systemd_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []
    pkg = types.ModuleType("systemd")
    mod = types.ModuleType("systemd.daemon")

    def fake_notify(status: str) -> bool:  # python-systemd's signature, first argument
        sent.append(status)
        return True

    mod.notify = fake_notify  # type: ignore[attr-defined]
    pkg.daemon = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "systemd", pkg)
    monkeypatch.setitem(sys.modules, "systemd.daemon", mod)
    monkeypatch.setattr(service, "_notify_impl", None)
    assert service.notify("READY=1") is True
    assert sent == ["READY=1"]


def test_notify_falls_back_to_its_own_datagram(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # "not installed"
    monkeypatch.setattr(service, "_notify_impl", None)
    path = tmp_path / "n.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    with _bound(str(path)) as sock:
        assert service.notify("STOPPING=1")
        assert sock.recv(64) == b"STOPPING=1"


@pytest.mark.parametrize(("env", "pid", "expected"), [
    ({}, 10, None),
    ({"WATCHDOG_USEC": "30000000"}, 10, 30.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "10"}, 10, 2.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "11"}, 10, None),  # inherited, not ours
    ({"WATCHDOG_USEC": "0"}, 10, None),
    ({"WATCHDOG_USEC": "soon"}, 10, None),
])
def test_watchdog_period(env: dict[str, str], pid: int, expected: float | None) -> None:
    assert service.watchdog_period(env, pid=pid) == expected


def test_journal_detected_only_when_it_names_our_stderr() -> None:
    st = os.fstat(2)
    assert service.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not service.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not service.stderr_is_journal({"JOURNAL_STREAM": "garbage"})
    assert not service.stderr_is_journal({})


def test_journal_lines_carry_syslog_priority(monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        service.configure_logging(logging.INFO)
        logging.getLogger("edgeguard.x").error("boom %d", 1)
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert "<3>edgeguard.x: boom 1" in capfd.readouterr().err
