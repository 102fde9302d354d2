"""``python -m adacode_jax.cli.split_by_class``: stage I's semantic subsets (library:
:mod:`adacode_jax.tools.split_by_class`)."""
from __future__ import annotations

import argparse
import os
import sys

from adacode_jax.cli import common

EXAMPLES = (
    "python -m adacode_jax.cli.split_by_class --input data/DIV2K_train_HR --output data/classes "
    "--segmenter segformer:/models/segformer-b5-ade --portraits data/FFHQ",
    "python -m adacode_jax.cli.split_by_class --input imgs/ --output classes/ "
    "--segmenter mypkg.seg:label_map",
)


def build_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(
        prog="python -m adacode_jax.cli.split_by_class",
        description="Cut images into patches and list them by semantic super-class (stage I): "
                    "OUTPUT/patches, architecture.txt, indoor.txt, natural.txt, street.txt, "
                    "all.txt, portrait.txt and summary.tsv.",
        examples=EXAMPLES)
    p.add_argument("--input", required=True, help="folder of high-resolution images (recursive)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--segmenter", required=True,
                   help="'segformer:PATH' (a local SegFormer ADE20K checkpoint folder) or "
                        "'package.module:function' (image -> ADE20K label map)")
    p.add_argument("--patch-size", type=int, default=512, help="patch side in pixels")
    p.add_argument("--stride", type=int, default=None, help="patch stride; default: the patch size")
    p.add_argument("--portraits", default=None, help="face image folder listed as portrait.txt")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input):
        parser.error(f"--input {args.input!r} is not a folder")
    if args.patch_size < 1 or (args.stride is not None and args.stride < 1):
        parser.error("--patch-size and --stride must be positive")
    from adacode_jax.tools import segmenters, split_by_class
    try:
        segment = segmenters.load_segmenter(args.segmenter)
    except (ValueError, ImportError, AttributeError, FileNotFoundError) as e:
        return common.fail(f"--segmenter {args.segmenter}: {e}; give 'segformer:PATH' or "
                           "'package.module:function'")
    result = split_by_class.split_by_class(args.input, args.output, segment, args.patch_size,
                                           args.stride, args.portraits, not args.no_progress)
    print(result["table"], end="")
    for msg in result["skipped"]:
        print(f"skipped: {msg}", file=sys.stderr)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
