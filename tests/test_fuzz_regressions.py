"""The decode contract of fuzz/fuzz_decode.py, kept in `make test`.

``make fuzz`` runs atheris on :func:`decode_contract.check` (decode either raises an
EdgeGuardError or returns an upright HxWx3 uint8 array within the limit; small results
encode again with their allow-listed EXIF and decode to the same size). Its runs so far
(see docs/reliability.md) found no input that breaks it; an input it finds goes into
``FOUND`` below, as a hex literal (no committed binaries), with what it broke.

Between fuzz runs, this test replays a fixed, seeded set of the mutations libFuzzer itself
makes (bit flips, interesting integers over length and size fields, cuts, inserted and
repeated slices) over every seed, so a change to the codec that breaks the contract on a
near-valid file fails here first.
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from decode_contract import check, seeds

# (name, hex of the input, what it broke): inputs the fuzzer found. None so far.
FOUND: list[tuple[str, str, str]] = []

_INTERESTING = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                b"\x00\x00\x01\x00", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00")


def mutations(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(6)
        if kind == 0:  # flip a few bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # an interesting 32-bit value over whatever is there
            i = rng.randrange(max(1, len(b) - 4))
            b[i:i + 4] = rng.choice(_INTERESTING)
        elif kind == 2:  # a 16-bit size field: big-endian (JPEG, PNG) or little (GIF, BMP)
            i = rng.randrange(max(1, len(b) - 2))
            b[i:i + 2] = struct.pack(rng.choice((">H", "<H")), rng.choice((0, 1, 0xFFFF,
                                                                          0x8000, 0x4000)))
        elif kind == 3:  # cut
            del b[rng.randrange(1, len(b)):]
        elif kind == 4:  # insert random bytes
            i = rng.randrange(len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 64))
        else:  # repeat a slice (segments, chunks, frames)
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 512))
            b[j:j] = b[i:j] * rng.randint(1, 4)
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("seed_name", sorted(seeds()))
def test_the_decode_contract_holds_on_mutated_seeds(seed_name: str) -> None:
    data = seeds()[seed_name]
    check(data)
    rng = random.Random(seed_name)
    for mutated in mutations(data, rng, 150):
        check(mutated)  # raises AssertionError or a non-EdgeGuardError on a finding


@pytest.mark.parametrize(("name", "hex_input", "broke"), FOUND or [
    pytest.param("none", "", "", marks=pytest.mark.skip(reason="the fuzzer found nothing"))])
def test_inputs_the_fuzzer_found(name: str, hex_input: str, broke: str) -> None:
    check(bytes.fromhex(hex_input))
