"""``adacode-make-testset`` / ``python -m adacode_jax.cli.make_testset``: a frozen, deterministic
evaluation set (library: :mod:`adacode_jax.tools.make_testset`)."""
from __future__ import annotations

import argparse
import os

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-make-testset --input data/DIV2K_valid_HR --output testsets/div2k_x4 --task sr_x4",
    "adacode-make-testset --input photos/ --output testsets/inpaint --task inpaint --seed 7",
    "adacode-evaluate benchmark --checkpoint ckpt/sr_x4 --testset testsets/div2k_x4 --output runs/b",
)


def build_parser() -> argparse.ArgumentParser:
    from adacode_jax.tools import make_testset
    p = common.ArgumentParser(
        prog="adacode-make-testset",
        description="Write a deterministic degraded (SR: BSRGAN) or masked (inpainting) test set "
                    "as PNG: OUTPUT/gt, OUTPUT/lq, OUTPUT/mask and manifest.json.",
        examples=EXAMPLES)
    p.add_argument("--input", required=True, help="folder of ground-truth images (recursive)")
    p.add_argument("--output", required=True, help="output folder (gt/, lq/, mask/)")
    p.add_argument("--task", required=True, choices=sorted(make_testset.TASKS),
                   help="sr_x2 / sr_x4: BSRGAN degradation and downscaling; inpaint: random "
                        "free-form holes")
    p.add_argument("--seed", type=int, default=123, help="base seed (123 is the reference's)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --output that holds a test set already (default: refuse)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more than N pixels (read from the header, before "
                        "decoding); 0: no cap; default: $ADACODE_MAX_PIXELS or 2**28")
    return p


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input):
        parser.error(f"--input {args.input!r} is not a folder")
    if problem := common.output_folder_problem(args.output, "--output"):
        return common.fail(problem)
    from adacode_jax.tools import make_testset
    manifest = make_testset.make_testset(args.input, args.output, args.task, args.seed,
                                         not args.no_progress, overwrite=args.overwrite,
                                         max_pixels=args.max_pixels)
    print(f"wrote {len(manifest['files'])} {args.task} pairs to {args.output}")
    if manifest["failed"]:
        return common.some_failed([item["error"] for item in manifest["failed"]])
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
