"""What a reload (SIGHUP) changes: a plan worked out from the old and new configuration
alone, which the daemon then applies."""

from __future__ import annotations

import dataclasses

from edgeguard.config import Config

# Settings that shape threads, folders or the lock: a reload logs them and keeps the old.
RESTART_ONLY = ("inbox", "outbox", "failed", "runtime_dir", "workers", "queue_size")

Change = tuple[str, str, object, object]


def config_changes(old: Config, new: Config) -> list[Change]:
    """(section, key, old, new) for every setting that differs."""
    out = []
    for section in dataclasses.fields(old):
        if section.name == "source":
            continue
        a, b = getattr(old, section.name), getattr(new, section.name)
        for f in dataclasses.fields(a):
            va, vb = getattr(a, f.name), getattr(b, f.name)
            if va != vb:
                out.append((section.name, f.name, va, vb))
    return out


@dataclasses.dataclass(frozen=True)
class ReloadPlan:
    cfg: Config  # the configuration to run with: the new one, restart-only keys kept
    applied: list[Change]  # what changes now
    kept: list[Change]  # what needs a restart

    @property
    def rebuilds_processor(self) -> bool:
        """Whether a setting outside [daemon] changes: the pipeline is built again."""
        return any(s != "daemon" for s, _, _, _ in self.applied)


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    changes = config_changes(old, new)
    kept = [(s, k, a, b) for s, k, a, b in changes if s == "daemon" and k in RESTART_ONLY]
    if kept:
        new = dataclasses.replace(new, daemon=dataclasses.replace(
            new.daemon, **{k: getattr(old.daemon, k) for _, k, _, _ in kept}))
    applied = [c for c in changes if c not in kept]
    return ReloadPlan(new, applied, kept)
