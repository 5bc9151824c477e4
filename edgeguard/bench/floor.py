"""The codec floor: decode every file and encode it again as JPEG quality 90, nothing else.

Run as a child process by ``edgeguard bench`` (``python -m edgeguard.bench.floor FILE...``)
so that its time and peak memory are measured the same way as the tools'. It is the least
a full-resolution file pipeline must spend per image; EdgeGuard's time is reported as a
multiple of it. Uses EdgeGuard's own codec (``edgeguard.codec``) when that module exists,
OpenCV otherwise. Prints one JSON object: ``{"backend", "seconds", "ms", "errors"}``;
``seconds`` covers the loop only, not interpreter start-up or imports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

QUALITY = 90

RoundTrip = Callable[[str], int]  # path -> encoded size in bytes


def _edgeguard_round_trip() -> RoundTrip:
    from edgeguard import codec
    from edgeguard.config import InputConfig

    max_pixels = InputConfig().max_pixels

    def rt(path: str) -> int:
        img = codec.decode_file(Path(path), max_pixels=max_pixels)
        return len(codec.encode(img.rgb, "jpeg", quality=QUALITY))

    return rt


def _opencv_round_trip() -> RoundTrip:
    import cv2
    import numpy as np

    def rt(path: str) -> int:
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{path}: cannot decode")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            raise ValueError(f"{path}: cannot encode")
        return int(buf.size)

    return rt


def round_trip(backend: str) -> tuple[str, RoundTrip]:
    """The decode+encode function for ``backend`` ("auto", "edgeguard" or "opencv")."""
    if backend in ("auto", "edgeguard"):
        try:
            return "edgeguard.codec", _edgeguard_round_trip()
        except ImportError:
            if backend == "edgeguard":
                raise
    return "opencv", _opencv_round_trip()


def measure(paths: Sequence[str], rt: RoundTrip,
            clock: Callable[[], float] = time.perf_counter) -> tuple[float, list[float], int]:
    """(loop seconds, per-image ms, errors) for one pass over ``paths``."""
    ms: list[float] = []
    errors = 0
    t0 = clock()
    for p in paths:
        t = clock()
        try:
            rt(p)
        except (OSError, ValueError):
            # An unreadable file is counted, not fatal: the tools are scored on it too.
            errors += 1
            continue
        ms.append((clock() - t) * 1000.0)
    return clock() - t0, ms, errors


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeguard.bench.floor", description=__doc__)
    ap.add_argument("--backend", choices=("auto", "edgeguard", "opencv"), default="auto")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    name, rt = round_trip(a.backend)
    try:
        from edgeguard.errors import InputError
        errs: tuple[type[BaseException], ...] = (InputError,)
    except ImportError:  # pragma: no cover - the package is always importable here
        errs = ()

    def guarded(p: str) -> int:
        try:
            return rt(p)
        except errs as exc:
            raise ValueError(str(exc)) from None

    seconds, ms, errors = measure(a.files, guarded)
    json.dump({"backend": name, "seconds": seconds, "ms": ms, "errors": errors}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
