"""`edgeguard blur` on a video: a hidden temporary file in the output folder, renamed into
place when complete, and a per-frame progress line on a terminal."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from edgeguard.errors import OutputError
from edgeguard.sinks.fileops import publish, reason, remove_quietly, temp_path
from edgeguard.video import item
from edgeguard.video.probe import output_name
from edgeguard.video.transcode import FrameFinder


class FrameBar:
    """``name [#####.....] 120/450 frames, 8.1 fps, ETA 41 s`` redrawn on a terminal."""

    def __init__(self, name: str, stream: TextIO = sys.stderr) -> None:
        self.meter = item.Meter(name)
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        self.meter.update(done, total)
        if not self.enabled:
            return
        width = 20
        bar = ""
        if total:
            filled = min(width, width * done // total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] "
        self.stream.write(f"\r\033[K{bar}{item.describe(self.meter.snapshot())}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def blur_video(src: Path, rel: Path, kind: str, pipe: FrameFinder, outdir: Path) -> Path:
    """Redact the video ``src`` into ``outdir`` (mirroring ``rel``); the path written."""
    final = outdir / output_name(rel, kind)
    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    tmp = temp_path(folder)
    bar = FrameBar(str(src))
    try:
        item.write_new_video(src, tmp, kind=kind, search=pipe, progress=bar)
    finally:
        bar.close()
    try:
        return publish(tmp, folder, final.name)
    except OSError as exc:
        raise OutputError(reason(exc, str(folder))) from exc
    finally:
        remove_quietly(tmp)  # gone already after a publish
