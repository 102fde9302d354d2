"""``adacode-export`` / ``python -m adacode_jax.cli.export``: a restoration network for serving,
as inference parameters plus a StableHLO artefact (library: :mod:`adacode_jax.inference.export`),
or (``--format safetensors``) any network as one ``.safetensors`` file in the official PyTorch key
layout (library: :mod:`adacode_jax.inference.safetensors_file`)."""
from __future__ import annotations

import argparse
import os

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-export --checkpoint ckpt/sr_x4 --output serve/sr_x4",
    "adacode-export --checkpoint AdaCode_SR_X4_model_g.pth --task sr --scale 4 --output serve/x4 --shape 256x256",
    "adacode-export --format safetensors --checkpoint ckpt/sr_x4 --output sr_x4.safetensors",
)
FORMATS = ("jax", "safetensors")
# Options of the jax format only, with their defaults (a safetensors export refuses them).
_JAX_ONLY = {"task": None, "scale": None, "dtype": "float32", "shape": None}


def _shape_arg(text: str) -> tuple[int, int] | None:
    if text == "symbolic":
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shape must be 'symbolic' or HxW, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"--shape sides must be positive, got {text!r}")
    return h, w


def _platforms_arg(text: str) -> list[str]:
    """``cpu,cuda`` -> ``["cpu", "cuda"]``, refused at parse time unless jax.export lowers
    for every name (rather than failing when the artefact is called)."""
    from adacode_jax.inference import export

    names = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in export.KNOWN_PLATFORMS]
    if not names or bad:
        what = f"unknown platform {', '.join(map(repr, bad))}" if bad else "none given"
        raise argparse.ArgumentTypeError(
            f"{what}; use a comma-separated list of "
            f"{', '.join(export.KNOWN_PLATFORMS)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    from adacode_jax.inference import export, restorer as restore
    p = common.ArgumentParser(prog="adacode-export",
                              description="Export a restoration network for serving: model.json + "
                                          "params (Orbax) and restore.jax_exported (StableHLO); or "
                                          "any network as one .safetensors file in the official "
                                          "AdaCode (PyTorch) key layout, for the official code "
                                          "and spandrel.",
                              examples=EXAMPLES)
    p.add_argument("--format", choices=FORMATS, default="jax",
                   help="jax: a serving folder (model.json + params + StableHLO); safetensors: "
                        "--output FILE.safetensors, official keys and layouts, from an inference "
                        "checkpoint folder (any kind, the discriminator too)")
    p.add_argument("--checkpoint", required=True,
                   help="inference checkpoint dir or official .pth/.npz/.safetensors")
    p.add_argument("--task", choices=restore.TASKS,
                   help="sr or inpaint (needed for .pth/.npz; a .safetensors file adacode-export "
                        "wrote names its own)")
    p.add_argument("--scale", type=int, choices=restore.SR_SCALES,
                   help="SR factor (default: the checkpoint's, 4 for a state dict)")
    p.add_argument("--output", required=True,
                   help="output directory (created); a FILE.safetensors for --format safetensors")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype inside the exported function (parameters stay float32)")
    p.add_argument("--shape", type=_shape_arg, default=None,
                   help="'symbolic' (default: any batch and size) or HxW for a fixed input size")
    p.add_argument("--platforms", type=_platforms_arg, default=list(export.PLATFORMS),
                   help="comma-separated lowering platforms, of "
                        f"{', '.join(export.KNOWN_PLATFORMS)} (default: {','.join(export.PLATFORMS)})")
    return p


def _export_safetensors(args, parser) -> int:
    """``--format safetensors``: an inference checkpoint folder -> one official-layout file;
    a line on stderr when spandrel could not load it."""
    import sys

    from adacode_jax.models import checkpointing
    from adacode_jax.inference import export, safetensors_file, spandrel_check

    given = [f"--{k}" for k, default in _JAX_ONLY.items() if getattr(args, k) != default]
    given += ["--platforms"] if args.platforms != list(export.PLATFORMS) else []
    if given:
        parser.error(f"{', '.join(given)}: only for --format jax")
    safetensors_file.check_output(args.output)                 # before any work
    if not os.path.isdir(args.checkpoint):
        what = "not an inference checkpoint folder" if os.path.exists(args.checkpoint) else \
            "does not exist"
        return common.fail(f"{args.checkpoint}: {what}; give the folder training or "
                           "adacode-convert wrote (convert an official file first)")
    cfg, variables, meta = checkpointing.load_inference(args.checkpoint)
    info = {**safetensors_file.provenance(args.checkpoint, meta),
            "source": str(meta.get("source") or os.path.abspath(args.checkpoint))}
    header = safetensors_file.export(args.output, cfg, variables, info)
    path = os.path.abspath(args.output)
    print(f"exported {cfg.kind} ({header.get('codebooks', 'no codebooks')}) to {path} in the "
          "official AdaCode key layout")
    note = spandrel_check.message(path, cfg)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.format == "safetensors":
        return _export_safetensors(args, parser)
    from adacode_jax.inference import export, restorer as restore
    from adacode_jax import models
    try:
        kind = restore.requested_kind(args.checkpoint, args.task, args.scale)
        cfg, variables, source = restore.load_network(args.checkpoint, kind, task=args.task,
                                                      dtype=args.dtype)
        model = models.build(cfg)
        exported = export.export_restore(
            model, variables, shape=args.shape,
            platforms=args.platforms)
        export.check_finite(model, variables, exported, source or args.checkpoint, args.shape)
    except FileNotFoundError as e:
        return common.fail(f"{e}; check the path")
    except ValueError as e:
        return common.fail(str(e))
    meta = export.save_export(args.output, cfg, variables, exported, source=source)
    print(f"exported {cfg.kind} ({cfg.dtype}) to {os.path.abspath(args.output)}: input "
          f"{meta['input']['shape']} -> output {meta['output']['shape']}, platforms {meta['platforms']}")
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
