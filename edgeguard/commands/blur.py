"""`edgeguard blur INPUT... -o OUTDIR`: redact files or folders into a folder."""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgeguard import codec, config
from edgeguard.cli import command
from edgeguard.commands.common import (
    Progress,
    add_config_flags,
    check_inputs,
    load_config,
)
from edgeguard.commands.video import blur_video
from edgeguard.config import Config
from edgeguard.errors import EdgeGuardError, InputError
from edgeguard.pipeline import Pipeline
from edgeguard.sinks.fileops import publish_bytes
from edgeguard.sinks.outbox import SIDECAR_SUFFIX
from edgeguard.sinks.sidecar import sidecar_text
from edgeguard.tally import Tally, tally
from edgeguard.video import item as video_item

logger = logging.getLogger(__name__)

# Exit codes (also in --help): 2 is the CLI's for a bad command line or config.
EXIT_OK, EXIT_FAILED, EXIT_NOTHING = 0, 1, 3

EPILOG = """\
An existing output is never overwritten: by default the new copy gets the next free name
(photo-1.jpg, photo-2.jpg, ...), so a re-run cannot destroy an earlier result, or a file
that only shares its name. --skip-existing instead skips an input whose output name
(OUTDIR/relative path, with the output format's suffix) already exists: re-running over
the same folders then redacts only what is new.

The summary counts the faces (a model is confident of them, score >= 0.5) and, apart,
the weak regions, redacted anyway, privacy first: masked or turned faces, or stray
patches. A face both models found counts once. -v gives the counts per file.

Exit status: 0 every input redacted (or skipped), 1 some input failed or does not exist,
2 a bad command line or config file, 3 nothing to redact (only empty folders).
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="image or video files, or folders")
    p.add_argument("-o", "--outdir", type=Path, required=True, help="folder for redacted copies")
    p.add_argument("-j", "--jobs", type=int, default=2, help="images in flight (default 2)")
    p.add_argument("--format", choices=config.OUTPUT_FORMATS,
                   help="output format (default: same as input)")
    p.add_argument("--quality", type=int, help="JPEG/WebP quality (default 90)")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output already exists (default: write the new "
                        "copy as NAME-1, NAME-2, ...; never overwrite)")
    add_config_flags(p)


@dataclass(frozen=True)
class _Done:
    src: Path
    written: Path | None = None
    error: str | None = None
    skipped: Path | None = None  # the existing output
    found: Tally = field(default_factory=Tally)
    note: str | None = None  # a warning about the output (the sidecar)


def _expected_output(src: Path, rel: Path, outdir: Path, cfg: Config) -> Path | None:
    """The name `blur` writes first for ``src``: the format from its header, not its suffix
    (a PNG named .jpg is written as .png). None when the header does not tell."""
    try:
        fmt, _, _ = codec.probe(src)
        out = codec.output_format(fmt, cfg.output.format)
    except (InputError, ValueError):
        return None  # the pipeline reports why
    return outdir / rel.parent / f"{rel.stem}{codec.suffix_for(out)}"


def _write_sidecar(image: Path, text: str) -> str | None:
    target = image.with_name(image.name + SIDECAR_SUFFIX)
    try:
        publish_bytes(text.encode(), target.parent, target.name, max_tries=1)
    except EdgeGuardError as exc:
        if isinstance(exc.__cause__, FileExistsError):
            return f"{target} exists (left alone); no sidecar for {image.name}"
        return f"sidecar not written: {exc}"
    return None


@command("blur", "redact faces in images and videos; write metadata-free copies to a folder")(_add)
def _blur(args: argparse.Namespace) -> int:
    cfg = config.override(load_config(args), "output", format=args.format,
                          jpeg_quality=args.quality)
    # Inputs first: a typo is reported at once, without waiting for the models to load.
    inputs = check_inputs(args.inputs)
    for path in inputs.missing:
        print(f"{path}: file not found", file=sys.stderr)
    for folder in inputs.empty:
        print(f"{folder}: no images in this folder (hidden and partial names are skipped)",
              file=sys.stderr)
    items = inputs.items
    if not items:
        return EXIT_FAILED if inputs.missing else EXIT_NOTHING
    # Models checked, interpreters created once, before any input (and any thread).
    pipe = Pipeline(cfg, at_start_up=True)
    progress = Progress(len(items))

    def one(item: tuple[Path, Path]) -> _Done:
        src, rel = item
        if args.skip_existing:
            existing = _expected_output(src, rel, args.outdir, cfg)
            if existing is not None and existing.exists():
                return _Done(src, skipped=existing)
        try:
            kind = video_item.kind_of_path(src)
            if kind is not None:
                return _Done(src, blur_video(src, rel, kind, pipe, args.outdir))
            out = pipe.redact_file(src)
            folder = args.outdir / rel.parent
            folder.mkdir(parents=True, exist_ok=True)
            written = publish_bytes(out.data, folder, rel.stem + out.suffix)
        except EdgeGuardError as exc:
            return _Done(src, error=str(exc))
        except OSError as exc:
            return _Done(src, error=f"cannot write output: {exc.strerror or exc}")
        note = (_write_sidecar(written, sidecar_text(out, cfg))
                if cfg.output.sidecar else None)
        return _Done(src, written, found=tally(out.detections), note=note)

    total = Tally()
    failed = skipped = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for done in pool.map(one, items):
            progress.step()
            if done.error is not None:
                failed += 1
                progress.message(f"{done.src}: {done.error}")
                continue
            if done.skipped is not None:
                skipped += 1
                if args.verbose:
                    progress.message(f"{done.src}: skipped, {done.skipped} exists",
                                     to=sys.stdout)
                continue
            total += done.found
            if done.note is not None:
                progress.message(f"{done.src}: {done.note}")
            if args.verbose:
                progress.message(f"{done.src} -> {done.written}: {done.found.text()}",
                                 to=sys.stdout)
    progress.close()
    redacted = len(items) - failed - skipped
    print(f"{redacted} of {len(items) + len(inputs.missing)} redacted into {args.outdir}"
          + (f", {skipped} skipped (output exists)" if skipped else "")
          + f": {total.text()}")
    return EXIT_FAILED if failed or inputs.missing else EXIT_OK
