"""Read a systemd unit file's settings, to run probes under the unit's own sandbox."""

from __future__ import annotations

from pathlib import Path

# Settings that describe the service's lifecycle or create and re-own its directories:
# a transient probe unit must not take them (it would chown or remove /run/edgeguard).
NOT_FOR_PROBES = (
    "Type", "NotifyAccess", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload",
    "ExecStop", "ExecStopPost", "Restart", "RestartSec", "WatchdogSec", "TimeoutStartSec",
    "TimeoutStopSec", "RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve",
    "StateDirectory", "StateDirectoryMode", "ConfigurationDirectory",
    "ConfigurationDirectoryMode",
)


def parse(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (continuation lines joined)."""
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not an assignment: {raw!r}")
        out.append((section, key.strip(), value.strip()))
    return out


def service_settings(path: Path) -> list[tuple[str, str]]:
    return [(k, v) for s, k, v in parse(path.read_text()) if s == "Service"]


def probe_properties(path: Path, *, without: tuple[str, ...] = ()) -> list[str]:
    """``-p KEY=VALUE`` arguments for systemd-run that reproduce the unit's sandbox
    (less the keys in ``without``)."""
    args: list[str] = []
    for key, value in service_settings(path):
        if key in NOT_FOR_PROBES or key in without:
            continue
        args += ["-p", f"{key}={value}"]
    return args
