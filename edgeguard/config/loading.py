"""Loading a TOML file into the schema: every key checked against its field's type, bounds
and choices, every problem reported at once in one line that names the file and the key (with
the nearest key for a misspelt one); command-line flags override the file through
:func:`override`; :func:`reference` writes the README's table."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from edgeguard.config.schema import _CROSS_CHECKS, SECTIONS, Config
from edgeguard.errors import ConfigError


def _check_value(where: str, f: dataclasses.Field[Any], value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item_hints: list[Any] = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            item_hints = list(args)
        value = tuple(
            _check_value(f"{where}[{i}]", f, v, h)
            for i, (v, h) in enumerate(zip(value, item_hints, strict=True))
        )
        if f.name == "color" and not all(0 <= c <= 255 for c in value):
            raise ConfigError(f"{where}: colour values must be 0-255")
        return value
    elif isinstance(hint, types.UnionType):
        raise TypeError(f"union types are not supported in config: {where}")
    meta = f.metadata
    if meta.get("choices") is not None and value not in meta["choices"]:
        allowed = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ConfigError(f"{where}: {value!r} is below the minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{where}: {value!r} is above the maximum {meta['hi']}")
    return value


def _key_hint(name: str, key: str) -> str:
    """The nearest key for a misspelt ``name.key``: in its own section first, then in
    another (a key put under the wrong heading; a stricter match, the first section wins)."""
    own = [f.name for f in dataclasses.fields(SECTIONS[name])]
    close = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {name}.{close[0]}?)"
    others = {f.name: f"{s}.{f.name}" for s, c in reversed(SECTIONS.items()) if s != name
              for f in dataclasses.fields(c)}
    close = difflib.get_close_matches(key, list(others), n=1, cutoff=0.8)
    return f" (did you mean {others[close[0]]}?)" if close else ""


def _section(name: str, cls: type[Any], data: Any, problems: list[str]) -> Any:
    """The section built from ``data``, or None with every problem appended to ``problems``."""
    if not isinstance(data, dict):
        problems.append(f"[{name}] must be a table")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key, value in data.items():
        if key not in fields:
            problems.append(f"unknown key {name}.{key}{_key_hint(name, key)}")
            continue
        try:
            kwargs[key] = _check_value(f"{name}.{key}", fields[key], value, hints[key])
        except ConfigError as exc:
            problems.append(str(exc))
    if len(problems) > before:
        return None
    section = cls(**kwargs)
    across = _CROSS_CHECKS.get(name)
    if across is not None and (found := across(section)):
        problems.extend(found)
        return None
    return section


def _raise_all(source: str, problems: list[str]) -> None:
    """One line naming the file and every problem in it (all at once, not the first)."""
    if len(problems) == 1:
        raise ConfigError(f"{source}: {problems[0]}")
    if problems:
        raise ConfigError(f"{source}: {len(problems)} errors: " + "; ".join(problems))


def _build_section(name: str, cls: type[Any], data: Any, source: str) -> Any:
    problems: list[str] = []
    section = _section(name, cls, data, problems)
    _raise_all(source, problems)
    return section


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    sections: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in data.items():
        if name not in SECTIONS:
            close = difflib.get_close_matches(name, list(SECTIONS), n=1, cutoff=0.6)
            hint = f" (did you mean [{close[0]}]?)" if close else ""
            problems.append(f"unknown section [{name}]{hint}")
            continue
        sections[name] = _section(name, SECTIONS[name], value, problems)
    _raise_all(source, problems)
    return Config(**sections, source=source)


def load(path: str | Path | None) -> Config:
    """Load and validate a TOML file; ``None`` gives the embedded defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except PermissionError:
        raise ConfigError(f"{p}: config file not readable (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return from_dict(data, source=str(p))


def override(cfg: Config, section: str, **values: Any) -> Config:
    """A copy of ``cfg`` with ``values`` (``None`` skipped) set in ``section``, validated."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return cfg
    current = getattr(cfg, section)
    merged = dataclasses.asdict(current) | values
    new_section = _build_section(section, type(current), merged, "command line")
    return dataclasses.replace(cfg, **{section: new_section})


def reference() -> str:
    """The configuration reference as Markdown (used by the README and `edgeguard config`)."""
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            allowed = ""
            if meta.get("choices"):
                allowed = ", ".join(map(str, meta["choices"]))
            elif meta.get("lo") is not None or meta.get("hi") is not None:
                allowed = f"{meta.get('lo')} - {meta.get('hi')}"
            default = f.default
            if isinstance(default, tuple):
                default = list(default)
            shown = (repr(default).replace("'", '"').replace("True", "true")
                     .replace("False", "false"))
            lines.append(f"| `{name}.{f.name}` | `{shown}` | {allowed} | {meta.get('doc', '')} |")
    return "\n".join(lines)
