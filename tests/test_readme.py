"""The README stays true: its configuration reference is the one the code validates."""

from __future__ import annotations

from pathlib import Path

from edgeguard import config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_matches_the_code() -> None:
    assert config.reference() in README.read_text(), (
        "README's configuration table is stale: paste edgeguard.config.reference() into it")


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().split("## ", 2)[0]
    assert "make run" in head and "make test" in head
