"""``adacode-evaluate`` / ``python -m adacode_jax.cli.evaluate``: score restored images.

Two subcommands: the default compares a folder of restored images with a folder of ground
truth; ``benchmark`` restores a frozen test set (``make_testset``) and scores it in one go.
The library is :mod:`adacode_jax.evaluation.evaluate`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-evaluate --pred out/ --gt data/DIV2K_valid_HR --crop-border 4 --output scores/",
    "adacode-evaluate --pred out/ --gt gt/ --pred-suffix _x4 --no-lpips",
    "adacode-evaluate benchmark --checkpoint ckpt/sr_x4 --testset testsets/div2k_x4 --output runs/bench",
)
SUBCOMMANDS = ("(none): compare --pred with --gt folders;  "
               "benchmark: restore a make_testset folder with --checkpoint, then compare")


def _common_metric_args(p: argparse.ArgumentParser) -> None:
    from adacode_jax.evaluation import evaluate
    p.add_argument("--crop-border", type=int, default=4,
                   help="pixels cropped from each side for PSNR/SSIM (as the official evaluate.py)")
    p.add_argument("--y", choices=sorted(evaluate.Y_SPACES), default="ycbcr",
                   help="luma for PSNR/SSIM: ycbcr (BT.601, 16-235), yiq (pyiqa's default), "
                   "rgb (all channels)")
    p.add_argument("--pyiqa-ssim", action="store_true",
                   help="SSIM as the current pyiqa: Y rounded to integers, contrast term clamped at 0")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (AlexNet and VGG)")
    p.add_argument("--lpips", nargs="+", choices=evaluate.LPIPS_NETS, default=list(evaluate.LPIPS_NETS),
                   help="LPIPS trunks")
    p.add_argument("--fd-vgg19", action="store_true",
                   help="also the Fréchet distance on VGG19 features over the set (not FID)")
    p.add_argument("--output", help="write metrics.json and metrics.csv here")
    p.add_argument("--quiet", action="store_true", help="no per-image rows, no progress bars")


def _evaluator_kwargs(args) -> dict[str, Any]:
    return dict(crop_border=args.crop_border, y=args.y, pyiqa_ssim=args.pyiqa_ssim,
                lpips_nets=() if args.no_lpips else tuple(args.lpips), fd_vgg19=args.fd_vgg19)


def _listed(stems: list[str], n: int = 5) -> str:
    return ", ".join(stems[:n]) + (f" and {len(stems) - n} more" if len(stems) > n else "")


def _notes(inputs: dict[str, Any]) -> list[str]:
    """What the scores leave out or score differently, one console line each."""
    lines = [f"note: {item['file']}: skipped, {item['reason']}" for item in inputs.get("skipped", ())]
    if inputs.get("missing_pred"):
        lines.append(f"note: {len(inputs['missing_pred'])} ground-truth image(s) have no "
                     f"prediction and are not scored: {_listed(inputs['missing_pred'])}")
    if inputs.get("unmatched_pred"):
        lines.append(f"note: {len(inputs['unmatched_pred'])} prediction(s) in {inputs['pred']} "
                     f"have no ground truth in {inputs['gt']} and are not scored: "
                     f"{_listed(inputs['unmatched_pred'])}")
    for m in inputs.get("colour_mismatch", ()):
        lines.append(f"note: {m['pred']} is {m['pred_is']} and its ground truth {m['gt']} is "
                     f"{m['gt_is']}: scored with the grey one repeated to R, G and B")
    return lines


def _finish(results: dict[str, Any], args) -> int:
    from adacode_jax.evaluation import evaluate
    for line in _notes(results["inputs"]):
        print(line, file=sys.stderr)
    print(evaluate.format_results(results, per_image=not args.quiet))
    if args.output:
        paths = evaluate.write_results(results, args.output)
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def benchmark_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(prog="adacode-evaluate benchmark",
                              description="Restore a frozen test set (written by adacode-make-testset) "
                                          "into OUTPUT/pred and evaluate it against its gt/.",
                              examples=EXAMPLES[2:])
    p.add_argument("--checkpoint", required=True, help="inference checkpoint dir or official .pth/.npz")
    p.add_argument("--testset", required=True, help="folder written by adacode-make-testset")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU")
    p.add_argument("--tile", default="auto", help="tile side, 'auto' or 0 (see adacode-restore --tile)")
    _common_metric_args(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = common.ArgumentParser(
        prog="adacode-evaluate",
        description="PSNR/SSIM (Y, border crop), LPIPS alex/vgg of restored images against ground "
                    "truth, matched by relative path without the file ending.\n\nSubcommands: "
                    + SUBCOMMANDS + "\n(adacode-evaluate benchmark --help for its options)",
        examples=EXAMPLES)
    p.add_argument("--pred", required=True, help="folder of restored images")
    p.add_argument("--gt", required=True, help="folder of ground-truth images")
    p.add_argument("--pred-suffix", default="", help="suffix to strip from prediction stems "
                   "(e.g. the restore --suffix)")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate the matched pairs even if some ground truth has no prediction")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse images with more than N pixels (read from the header, before "
                        "decoding); 0: no cap; default: $ADACODE_MAX_PIXELS or 2**28")
    _common_metric_args(p)
    return p


def _main(argv: list[str] | None = None) -> int:
    from adacode_jax.evaluation import evaluate
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"]:
        p = benchmark_parser()
        args = p.parse_args(argv[1:])
        if not args.output:
            p.error("benchmark needs --output (restored images go to OUTPUT/pred)")
        if args.tile != "auto" and not args.tile.isdigit():
            p.error(f"--tile must be 'auto' or an integer >= 0, got {args.tile!r}")
        tile = args.tile if args.tile == "auto" else int(args.tile)
        try:
            results = evaluate.benchmark(args.checkpoint, args.testset, args.output, dtype=args.dtype,
                                         tile=tile, progress=not args.quiet, **_evaluator_kwargs(args))
        except FileNotFoundError as e:
            return common.fail(f"{e}; check the path")
        except ValueError as e:
            return common.fail(str(e))
        return _finish(results, args)
    args = build_parser().parse_args(argv)
    if problem := common.output_folder_problem(args.output, "--output"):
        return common.fail(problem)
    try:
        results = evaluate.evaluate_folders(args.pred, args.gt, strip_suffix=args.pred_suffix,
                                            allow_missing=args.allow_missing, progress=not args.quiet,
                                            max_pixels=args.max_pixels, **_evaluator_kwargs(args))
    except FileNotFoundError as e:
        return common.fail(f"{e}; check the path")
    except evaluate.EvaluationError as e:
        return common.fail(str(e))
    return _finish(results, args)


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
