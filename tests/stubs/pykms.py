"""Test-only stand-in for pykms (kms++'s Python binding), which picamera2 imports for its DRM
preview window. A build machine has no display and PyPI has no pykms (and the `kms` name
there is an unrelated package: never pip-install it), so the camera tests put this folder on
sys.path only when the real module is missing. It satisfies the import and the class-level
format table of picamera2.previews.DrmPreview; anything that would really drive a display
fails loudly.
"""

from __future__ import annotations

from typing import Any


class _Names:
    """``PixelFormat.RGB888`` and friends: their names are enough at import time."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return name


PixelFormat = _Names()
PlaneType = _Names()


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)  # the import system probes __path__, __spec__, ...
    raise RuntimeError(f"pykms.{name}: this is the test stub (no DRM display on a build machine)")
