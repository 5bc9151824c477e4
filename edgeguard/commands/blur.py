"""`edgeguard blur INPUT... -o OUTDIR`: redact files or folders into a folder."""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgeguard import fsutil
from edgeguard.cli import command
from edgeguard.commands.common import Progress, add_config_flags, expand_inputs, load_config
from edgeguard.commands.video import blur_video
from edgeguard.errors import EdgeGuardError
from edgeguard.pipeline import Pipeline
from edgeguard.video import item as video_item

logger = logging.getLogger(__name__)


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="image or video files, or folders")
    p.add_argument("-o", "--outdir", type=Path, required=True, help="folder for redacted copies")
    p.add_argument("-j", "--jobs", type=int, default=2, help="images in flight (default 2)")
    p.add_argument("--format", choices=("same", "jpeg", "png", "webp"),
                   help="output format (default: same as input)")
    p.add_argument("--quality", type=int, help="JPEG/WebP quality (default 90)")
    add_config_flags(p)


@command("blur", "redact faces in images and videos; write metadata-free copies to a folder")(_add)
def _blur(args: argparse.Namespace) -> int:
    from edgeguard import config

    cfg = config.override(load_config(args), "output", format=args.format,
                          jpeg_quality=args.quality)
    pipe = Pipeline(cfg)  # models checked, interpreters created once, before any input
    items = list(expand_inputs(args.inputs))
    progress = Progress(len(items))
    failures = 0

    def one(item: tuple[Path, Path]) -> tuple[Path, Path | None, str | None]:
        src, rel = item
        try:
            kind = video_item.kind_of_path(src)
            if kind is not None:
                return src, blur_video(src, rel, kind, pipe, args.outdir), None
            out = pipe.redact_file(src)
            folder = args.outdir / rel.parent
            folder.mkdir(parents=True, exist_ok=True)
            written = fsutil.write_unique(folder, rel.stem, out.suffix, out.data)
            return src, written, None
        except EdgeGuardError as exc:
            return src, None, str(exc)
        except OSError as exc:
            return src, None, f"cannot write output: {exc.strerror or exc}"

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for src, written, error in pool.map(one, items):
            progress.step()
            if error is not None:
                failures += 1
                progress.message(f"{src}: {error}")
            elif not progress.enabled:
                logger.info("%s -> %s", src, written)
    progress.close()
    if items:
        print(f"{len(items) - failures} of {len(items)} redacted into {args.outdir}")
    return 1 if failures or not items else 0
