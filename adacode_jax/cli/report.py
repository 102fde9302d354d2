"""``python -m adacode_jax.cli.report``: training curves and timing of runs.

Two subcommands, ``curves`` (a PNG, one panel per metric) and ``timing`` (a Markdown table);
both read the runs' ``metrics.jsonl``. The library is :mod:`adacode_jax.evaluation.report`.
"""
from __future__ import annotations

import sys

from adacode_jax.cli import common
from adacode_jax.evaluation import report

PROG = "python -m adacode_jax.cli.report"


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=report.__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curves", help="plot metrics of runs against the step")
    c.add_argument("--run", action="append", required=True, metavar="NAME=WORKDIR")
    c.add_argument("--metric", action="append", required=True,
                   help="a key of metrics.jsonl, e.g. val/psnr (repeatable)")
    c.add_argument("--output", required=True, help="PNG file")
    c.add_argument("--title", default="")
    t = sub.add_parser("timing", help="steps and wall-clock per run")
    t.add_argument("--run", action="append", required=True, metavar="NAME=WORKDIR")
    t.add_argument("--max-gap", type=float, default=5.0,
                   help="leave out gaps longer than this many median gaps (downtime)")
    return p


def _main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        runs = common.named_paths(args.run, p, "--run", "WORKDIR")
        if args.command == "curves":
            print(report.plot_curves(runs, args.metric, args.output, args.title))
        else:
            print(report.timing_table(runs, args.max_gap))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
