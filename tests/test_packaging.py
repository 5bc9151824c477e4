"""Build hygiene a new user meets: a clean wheel build, a quiet camera test environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _copy(tmp_path: Path, *extra: str) -> Path:
    """The files a build needs, copied: building in the checkout would leave build/ there."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "edgeguard", src / "edgeguard",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", *extra):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    return src


@pytest.mark.slow
def test_the_wheel_builds_without_a_setuptools_warning(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                         check=False, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    # The license as a table made setuptools warn on every build (removal due 2027-02).
    assert "BuildBackendWarning" not in out and "SetuptoolsDeprecationWarning" not in out
    (wheel,) = (tmp_path / "dist").glob("edgeguard-*.whl")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    assert b"\nLicense-Expression: Apache-2.0\n" in meta


@pytest.mark.slow
def test_the_camera_test_environment_installs_without_a_resolver_error(
        tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("dpkg") is None or subprocess.run(
            ["dpkg", "-s", "python3-libcamera"], capture_output=True, check=False).returncode:
        pytest.skip("needs root and Debian's python3-libcamera (tools/camera-test-env.sh)")
    src = _copy(tmp_path, "tools/camera-test-env.sh")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    res = subprocess.run(["bash", "tools/camera-test-env.sh", str(venv)], cwd=src,
                         capture_output=True, text=True, check=False, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "ERROR" not in out, out[-3000:]
    assert "installed without its optional dependencies" in res.stdout  # said once, calmly
    show = subprocess.run([str(venv / "bin/python"), "-m", "pip", "show", "picamera2"],
                          capture_output=True, text=True, check=False)
    assert "Version: 0.3.38" in show.stdout
