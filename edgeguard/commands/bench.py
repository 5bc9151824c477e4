"""`edgeguard bench`: recall and speed over annotated sets, against the peers, in one run."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from edgeguard.cli import command
from edgeguard.detect.profiles import PROFILES
from edgeguard.errors import ConfigError

PEER_NAMES = ("deface", "seed")


def _csv(choices: tuple[str, ...], what: str,
         allow_none: bool = False) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        if allow_none and items in ((), ("none",)):
            return ()
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or '(empty)'}; choose from "
                f"{','.join(choices)}" + (" or none" if allow_none else ""))
        return tuple(dict.fromkeys(items))

    return parse


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sets", type=Path, nargs="+", default=[], metavar="DIR",
                   help="annotated set folders (with annotations.json), or folders of them; "
                        "added to ../shared/data/faces when that exists")
    p.add_argument("--no-default-sets", action="store_true",
                   help="measure only the --sets folders")
    p.add_argument("--profiles", type=_csv(tuple(PROFILES), "profile", allow_none=True),
                   default=("balanced", "fast", "thorough"),
                   help=f"comma-separated profiles to measure ({','.join(PROFILES)}; "
                        "default all three; none to measure only the peers)")
    p.add_argument("--peers", type=_csv(PEER_NAMES, "peer", allow_none=True),
                   default=PEER_NAMES,
                   help="comma-separated peers to measure where installed (deface,seed; "
                        "default both; none for none)")
    p.add_argument("--out", type=Path, default=Path("bench-out"),
                   help="folder for bench.md, bench.json, the plot and result files "
                        "(default bench-out)")
    p.add_argument("--quick", action="store_true",
                   help="a small sample: the first 20 images per set, 3 per 12 MP set")
    p.add_argument("--limit", type=int, metavar="N", help="the first N images of every set")
    p.add_argument("--config", type=Path, help="EdgeGuard config file passed to each run")
    p.add_argument("--no-blur", action="store_true",
                   help="skip timing `edgeguard blur` on the 12 MP sets")
    p.add_argument("--peers-dir", type=Path,
                   help="folder holding .venv-deface and .venv-seed (default: the repository)")
    p.add_argument("--tools", type=Path,
                   help="shared tools folder with peers/ and eval_redaction.py "
                        "(default ../shared/tools)")


@command("bench", "measure protection and speed on annotated sets, against the peers")(_add)
def _bench(args: argparse.Namespace) -> int:
    # Imported here: the benchmark is not part of the appliance's start-up path.
    from edgeguard.bench import report, sets, suite
    from edgeguard.bench.runners import BenchRunner

    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"{args.config}: no such config file")
    root = sets.repo_root()
    if root is None:
        raise ConfigError("edgeguard bench runs from a source checkout (no pyproject.toml found)")
    found = sets.resolve_sets([Path(d) for d in args.sets],
                              use_default=not args.no_default_sets)
    tools = args.tools if args.tools is not None else sets.default_tools_dir(root)
    runner = BenchRunner(repo_root=root, config=args.config.resolve() if args.config else None,
                         peers_dir=args.peers_dir, tools_dir=tools)
    opts = suite.Options(profiles=args.profiles, peers=args.peers, quick=args.quick,
                         limit=args.limit, blur=not args.no_blur)
    cmd = "edgeguard " + shlex.join(sys.argv[sys.argv.index("bench"):]) \
        if "bench" in sys.argv else None
    rep = suite.run_bench(found, opts, runner, args.out.resolve(),
                          eval_script=tools / suite.EVAL_SCRIPT if tools else None,
                          command=cmd)
    md, js, png = report.write_all(rep, args.out)
    print(report.markdown(rep))
    print(f"wrote {md}, {js}" + (f", {png}" if png else " (no plot: matplotlib missing)"))
    return 0
