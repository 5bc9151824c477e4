"""Videos as inbox items: recognise, probe and check limits, redact frame by frame, re-encode.

The pieces, in the order a video goes through them:

- :func:`sniff` names the container from the first bytes (never the file name);
- :mod:`edgeguard.video.probe` opens the container with PyAV (FFmpeg), reads the header
  and refuses, before a frame is decoded, what the ``[video]`` limits exclude;
- :mod:`edgeguard.video.hold` (pure) keeps a face covered a few frames either side of the
  frames it was found in;
- :mod:`edgeguard.video.transcode` decodes one frame at a time, runs the file search on
  every frame, redacts, re-encodes H.264 and copies the audio packets unchanged;
- :mod:`edgeguard.video.item` ties it to the daemon and to `edgeguard blur`.

PyAV is imported lazily (only when a video arrives), so photos never load FFmpeg.
"""

from __future__ import annotations

from typing import Final

#: How many leading bytes :func:`sniff` looks at.
SNIFF_BYTES: Final = 64

# ISO media brands that are still images or camera raw, not video (codec refuses those).
_NOT_VIDEO_BRANDS: Final = frozenset({
    b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1",
    b"mif2", b"avif", b"avis", b"crx ",
})
# Top-level QuickTime atoms an old .mov may start with instead of ftyp.
_QT_ATOMS: Final = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff(head: bytes) -> str | None:
    """The container a file's first bytes name: "mp4", "mov", "matroska", "webm", "avi",
    or None for anything that is not a video container we take."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _NOT_VIDEO_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_ATOMS:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:SNIFF_BYTES] else "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None
