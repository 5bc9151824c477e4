"""Fixtures for the systemd container tests: the cached base tree, the wheelhouse, images.

They skip (with the reason) where the machine cannot run them: not root, no
systemd-nspawn or debootstrap, no network for the first build. With
EDGEGUARD_REQUIRE_SYSTEM=1 (CI) a skip is a failure instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import nspawn
import numpy as np
import pytest
from face_images import encode

REQUIRE = os.environ.get("EDGEGUARD_REQUIRE_SYSTEM") == "1"


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"EDGEGUARD_REQUIRE_SYSTEM=1 but the system tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def base_tar() -> Path:
    reason = nspawn.missing_prerequisites()
    if reason:
        unavailable(reason)
    try:
        return nspawn.base_tarball()
    except nspawn.HarnessError as exc:
        unavailable(f"cannot build the Debian tree (network?): {exc}")
        raise


@pytest.fixture(scope="session")
def wheels(base_tar: Path) -> Path:
    try:
        return nspawn.wheelhouse(base_tar)
    except nspawn.HarnessError as exc:
        unavailable(f"cannot download the wheels (network?): {exc}")
        raise


@pytest.fixture(scope="module")
def tree(base_tar: Path) -> Iterator[Path]:
    with nspawn.fresh_tree(base_tar) as t:
        yield t


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut_rgb: np.ndarray) -> bytes:
    return encode(astronaut_rgb, "JPEG")


@pytest.fixture(scope="session")
def astronaut_png(astronaut_rgb: np.ndarray) -> bytes:
    return encode(astronaut_rgb, "PNG")
