"""``adacode-restore`` / ``python -m adacode_jax.cli.restore``: restore image files and folders.

The library behind it is :class:`adacode_jax.inference.restorer.Restorer` (one image) and
:mod:`adacode_jax.inference.batch` (folders, output names, per-file errors).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-restore -i photo.jpg -o out/                       # shipped compact x4 model",
    "adacode-restore -i photos/ -o out/ --outscale 2            # x4 network, then resize to x2",
    "adacode-restore --checkpoint AdaCode_SR_X4_model_g.pth --task sr --scale 4 -i in/ -o out/",
    "adacode-restore --checkpoint ckpt/inpaint --task inpaint -i in/ --mask masks/ -o out/",
    "adacode-restore -i photo.png -o out/ --save-weight-maps    # also the K codebook maps",
)


def _tile_arg(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile must be 'auto' or an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("--tile must be >= 0")
    return value


def _outscale_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--outscale must be a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"--outscale must be > 0, got {text!r}")
    return value


def _device_arg(text: str) -> str:
    platform, _, index = text.partition(":")
    if platform not in ("auto", "cpu", "gpu", "cuda", "rocm", "tpu") or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(
            f"--device must be auto, cpu, gpu, tpu or PLATFORM:INDEX (e.g. gpu:1), got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    from adacode_jax.inference import restorer as restore   # the library's choices and defaults
    p = common.ArgumentParser(
        prog="adacode-restore",
        description="Restore images with an AdaCode network (SR x2/x4, inpainting). Without "
                    "--checkpoint the compact x4 model shipped with the package is used.",
        examples=EXAMPLES)
    p.add_argument("--checkpoint", default=None,
                   help="inference checkpoint directory, or an official .pth/.npz state dict; "
                        "default: the compact x4 model shipped with the package (trained by "
                        "this code on real photos, see adacode_jax/pretrained/MODEL_CARD.md; "
                        "--task sr --scale 4 only)")
    p.add_argument("--task", choices=restore.TASKS, help="sr or inpaint (required for .pth/.npz; "
                   "checked against a checkpoint directory)")
    p.add_argument("--scale", type=int, choices=restore.SR_SCALES,
                   help="the network's SR factor (default: the checkpoint's, 4 for a state dict)")
    p.add_argument("-i", "--input", required=True, help="an image file or a folder (recursive)")
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    p.add_argument("--mask", help="inpainting: a mask file (white = hole) or a folder of masks "
                   "with the inputs' relative paths; every input needs one")
    p.add_argument("--white-holes", action="store_true",
                   help="inpainting without --mask: the white pixels already in the images are "
                        "the holes")
    p.add_argument("--outscale", type=_outscale_arg, default=None, metavar="S",
                   help="final size as a multiple of the input's (as Real-ESRGAN's --outscale): "
                        "the network's output is resized to it (Lanczos up, area down); "
                        "default: the network's own scale")
    p.add_argument("--device", type=_device_arg, default="auto",
                   help="where to run: auto (JAX's default: GPU/TPU if present), cpu, gpu, tpu, "
                        "or PLATFORM:INDEX such as gpu:1")
    p.add_argument("--tile", type=_tile_arg, default="auto",
                   help="tile side in input pixels; 'auto': the checkpoint's own tiling "
                        "if its model.json recommends one (the shipped compact model does), else "
                        "from free memory; 0: never")
    p.add_argument("--low-freq-fix", type=float, default=None, metavar="SIGMA",
                   help="SR: take the output's colours/brightness below this Gaussian sigma "
                        "(output pixels) from the bicubic upsampled input; default: what the "
                        "checkpoint's model.json recommends (the shipped compact model: 4), "
                        "else off; 0: off")
    p.add_argument("--tile-overlap", type=int, default=None,
                   help=f"tile overlap in input pixels (default: max({restore.DEFAULT_OVERLAP}, "
                        "pad multiple))")
    p.add_argument("--dtype", choices=restore.DTYPES, default="auto",
                   help="compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU")
    p.add_argument("--alpha", choices=restore.ALPHA_MODES, default="bicubic",
                   help="how an SR alpha channel is upscaled")
    p.add_argument("--ext", default="auto", choices=("auto", "png", "jpg", "tif", "webp"),
                   help="output format; auto: the input's, or PNG where that cannot hold alpha/16 bits")
    p.add_argument("--suffix", default="", help="appended to output file stems after '_' "
                   "(x4: name_x4.png) unless it starts with _, -, . or a space; needed when -o "
                   "is the input folder (files ending in it are then not read as inputs)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace outputs that exist already (default: refuse before any work)")
    existing.add_argument("--skip-existing", action="store_true",
                          help="keep outputs that exist already and restore only the other inputs")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="refuse inputs with more than N pixels (read from the header, before "
                        "decoding); 0: no cap; default: $ADACODE_MAX_PIXELS or 2**28")
    p.add_argument("--save-weight-maps", action="store_true",
                   help="also write DIR/weight_maps/<name>.png: the K codebook weight maps")
    p.add_argument("--drop-codebook", type=int, action="append", default=[], metavar="K",
                   help="codebook explorer: set basis codebook K's weight w_K to 0 before "
                        "decoding (repeatable; see adacode_jax.inference.explorer)")
    p.add_argument("--keep-codebook", type=int, action="append", default=None, metavar="K",
                   help="codebook explorer: decode with codebook K only (repeatable: with those "
                        "only); the weight maps saved are still the predicted ones")
    p.add_argument("--exact-padding", action="store_true",
                   help="pad every image exactly as the official test() (one compilation per size)")
    p.add_argument("--benchmark-speed", type=int, default=0, metavar="N",
                   help="time N restorations of each input after a warm-up; print s/megapixel; "
                        "write nothing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def device_context(spec: str):
    """A context in which JAX places new arrays and computations on the ``--device`` choice."""
    import jax
    if spec == "auto":
        return contextlib.nullcontext()
    platform, _, index = spec.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if not devices:
        from adacode_jax import errors
        have = sorted({d.platform for d in jax.devices()})
        raise errors.UserError(f"--device {spec}: no {platform} device on this machine "
                               f"(have: {', '.join(have)})",
                               "choose one of those or install the jax extra for it "
                               "(pip install 'adacode-jax[cuda]' / '[tpu]')")
    i = int(index or 0)
    if i >= len(devices):
        from adacode_jax import errors
        raise errors.UserError(f"--device {spec}: only {len(devices)} {platform} device(s)",
                               f"use an index from 0 to {len(devices) - 1}")
    return jax.default_device(devices[i])


def _mask_problem(args, jobs, inpainting: bool) -> str | None:
    """The one-line error when an inpainting run lacks masks (the jobs' masks found; checked
    before any image is restored), else None."""
    if args.white_holes and (args.mask or not inpainting):
        return ("--white-holes is for inpainting without --mask; drop it"
                + (" or --mask" if inpainting else ""))
    if not inpainting or args.white_holes:
        return None
    if not args.mask:
        return ("inpainting needs the holes: give --mask (a mask file, white = hole, or a folder "
                "of masks with the inputs' relative paths), or --white-holes to take the white "
                "pixels already in the images as the holes")
    lacking = [job.rel for job in jobs if not job.mask]
    if lacking:
        where = ("a single mask file is for a single input image; give a folder of masks"
                 if os.path.isfile(args.mask) else
                 "add masks with the same relative path and stem, or pass --white-holes "
                 "instead of --mask")
        return (f"{args.mask}: no mask for {len(lacking)} of {len(jobs)} input(s) "
                f"({', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}); {where}")
    return None


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with device_context(args.device):
        return _restore(args)


def _restore(args) -> int:
    import jax
    import jax.numpy as jnp
    from adacode_jax.inference import batch as batch_restore, restorer as restore
    from adacode_jax import images as imageio
    err = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    if args.checkpoint is None:
        shipped = restore.shipped_model(args.task or "sr", args.scale if args.scale else 4)
        err(f"no --checkpoint: using the shipped compact model {shipped}")
    if args.mask and not os.path.exists(args.mask):
        return common.fail(f"{args.mask}: the --mask file or folder does not exist; check the path")
    if problem := common.output_folder_problem(args.output):
        return common.fail(problem)
    # the job list and existing outputs are checked before the network is loaded
    existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "refuse"
    jobs = batch_restore.list_inputs(args.input, args.output, suffix=args.suffix)
    if not args.benchmark_speed:
        batch_restore.plan_outputs(jobs, args.output, suffix=args.suffix, ext=args.ext,
                                   save_weight_maps=args.save_weight_maps, existing=existing)
    try:
        restorer = restore.Restorer.from_checkpoint(
            args.checkpoint, args.task, scale=args.scale, dtype=args.dtype, tile=args.tile,
            overlap=args.tile_overlap, buckets=not args.exact_padding, alpha=args.alpha,
            progress=not args.no_progress, low_freq_fix=args.low_freq_fix,
            outscale=args.outscale)
    except FileNotFoundError as e:
        return common.fail(f"{e}; check the path")
    except (ValueError, TypeError) as e:
        return common.fail(str(e))
    if args.drop_codebook or args.keep_codebook is not None:
        from adacode_jax.inference import explorer   # raises UserError for a codebook the network lacks
        k = explorer.num_codebooks(restorer)
        restorer.codebook_mask = explorer.codebook_mask(k, drop=args.drop_codebook,
                                                        keep=args.keep_codebook)
        used = [i for i in range(k) if restorer.codebook_mask is None or restorer.codebook_mask[i]]
        err(f"note: decoding with codebook(s) {', '.join(map(str, used))} of {k}")
    if not jobs:
        for path, reason in jobs.skipped:
            err(f"note: {path}: skipped, {reason}")
        return common.fail(f"{args.input}: no images found ({', '.join(imageio.IMAGE_EXTENSIONS)}); "
                           "give an image file or a folder holding some")
    if args.mask and restorer.scale != 1:
        return common.fail(f"{args.mask}: --mask is for inpainting, but this checkpoint "
                           f"super-resolves (x{restorer.scale}); drop --mask or give an "
                           "inpainting checkpoint")
    for job in jobs:
        job.mask = batch_restore.find_mask(args.mask, job, os.path.isfile(args.input))
    inpainting = restorer.scale == 1 and restorer.model.lq_stage
    if problem := _mask_problem(args, jobs, inpainting):
        return common.fail(problem)
    if jax.default_backend() == "cpu" and restorer.model.dtype == jnp.bfloat16:
        err("note: bfloat16 on CPU is emulated and slower than float32")
    err(f"network: {restorer.description} (x{restorer.scale}, {restorer.model.dtype.__name__}) "
        f"on {jax.default_backend()}; {len(jobs)} file(s)")
    if args.benchmark_speed:
        batch_restore.benchmark_speed(restorer, jobs, args.benchmark_speed)
        return 0
    os.makedirs(args.output, exist_ok=True)
    report = batch_restore.restore_files(restorer, jobs, args.output, suffix=args.suffix, ext=args.ext,
                                         save_weight_maps=args.save_weight_maps,
                                         progress=not args.no_progress,
                                         weight_map_title=f"{restorer.description}",
                                         existing=existing, max_pixels=args.max_pixels)
    print(f"restored {len(report.written)} of {len(jobs)} file(s) into {args.output} "
          f"in {report.seconds:.1f} s")
    if report.failed:
        return common.some_failed([f"{path}: {why}" for path, why in report.failed],
                                  total=len(jobs), any_written=bool(report.written))
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
