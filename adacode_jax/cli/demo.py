"""``adacode-demo`` / ``make demo`` / ``python -m adacode_jax.cli.demo``: the shipped model on the
embedded images, then the three training stages in miniature (:mod:`adacode_jax.tools.demo`)."""
from __future__ import annotations

import argparse
import os
import time

from adacode_jax.cli import common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # no TensorFlow C++ start-up lines
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # TF only reads data and writes logs here; its oneDNN note is noise

EXAMPLES = (
    "adacode-demo --workdir demo_out                # both parts, a few minutes on a CPU",
    "adacode-demo --workdir demo_out --no-train     # only the shipped model (about a minute)",
)


def build_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(
        prog="adacode-demo",
        description="Part 1: the shipped compact x4 model restores the embedded images (panels "
                    "and a table against bicubic). Part 2: stages I-III on tiny networks.",
        examples=EXAMPLES)
    p.add_argument("--workdir", default="demo_out", help="where runs and pictures go")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stage's steps")
    p.add_argument("--no-train", action="store_true",
                   help="only part 1: the shipped model on the embedded images (about a minute)")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.steps_scale > 0:
        return common.fail(f"--steps-scale {args.steps_scale}: must be > 0")
    from absl import flags, logging
    from adacode_jax.tools import demo

    flags.FLAGS.mark_as_parsed()      # grain reads absl flags (docs/assets.md#software-stack, pitfall 1)
    logging.set_verbosity(logging.WARNING)
    t0 = time.time()
    demo.run(args.workdir, args.steps_scale, train=not args.no_train)
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
