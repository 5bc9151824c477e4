"""Fuzz the decode path (``edgeguard.codec.decode_bytes``) with atheris (libFuzzer).

    python fuzz/fuzz_decode.py [libFuzzer options] [CORPUS_DIR ...]

``make fuzz`` runs it for a bounded time (``-max_total_time``). The contract under test is
the one the daemon relies on: for any bytes, decode either raises an
:class:`~edgeguard.errors.EdgeGuardError` (a one-line reason, the file goes to failed/) or
returns an upright HxWx3 ``uint8`` array, C-contiguous and writable, within
``max_pixels``. Anything else (another exception, a crash in native code, a hang past
libFuzzer's ``-timeout``, memory past ``-rss_limit_mb``) is a finding: libFuzzer writes
the input to ``-artifact_prefix`` and it becomes a test in tests/test_fuzz_regressions.py.

Small decoded images also go through the rest of the daemon's codec path: the allow-listed
EXIF tags are picked, and the pixels encoded again in their format with those tags, which
re-creates an EXIF block from fuzzed values (:func:`edgeguard.codec.build_exif`).

Seeds are generated, not committed: when a corpus folder is given and empty, it is filled
with small valid images of every accepted format and variant (progressive, CMYK, 16-bit,
palette, alpha, EXIF with orientation and GPS), plus a few refused ones (animated, HEIC).
Pillow's plugins and edgeguard are instrumented for coverage; OpenCV, libjpeg-turbo,
libpng and libwebp run as they are (native code: a crash there still shows as a crash).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["PIL", "edgeguard", "decode_contract"]):
    from decode_contract import check, seeds


def test_one_input(data: bytes) -> None:
    check(data)


def _fill_corpus(argv: list[str]) -> None:
    folders = [a for a in argv[1:] if not a.startswith("-") and os.path.isdir(a)]
    for folder in folders:
        if not os.listdir(folder):
            for name, data in seeds().items():
                with open(os.path.join(folder, name), "wb") as fh:
                    fh.write(data)


def main() -> None:
    logging.disable(logging.CRITICAL)  # codec warns about odd EXIF; that is not a finding
    warnings.simplefilter("ignore")
    _fill_corpus(sys.argv)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
