"""``adacode-export`` / ``python -m adacode_jax.cli.export``: a restoration network for serving,
as inference parameters plus a StableHLO artefact (library: :mod:`adacode_jax.inference.export`)."""
from __future__ import annotations

import argparse
import os

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-export --checkpoint ckpt/sr_x4 --output serve/sr_x4",
    "adacode-export --checkpoint AdaCode_SR_X4_model_g.pth --task sr --scale 4 --output serve/x4 --shape 256x256",
)


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
                                          "params (Orbax) and restore.jax_exported (StableHLO).",
                              examples=EXAMPLES)
    p.add_argument("--checkpoint", required=True, help="inference checkpoint dir or official .pth/.npz")
    p.add_argument("--task", choices=restore.TASKS, help="sr or inpaint (needed for .pth/.npz)")
    p.add_argument("--scale", type=int, choices=restore.SR_SCALES,
                   help="SR factor (default: the checkpoint's, 4 for a state dict)")
    p.add_argument("--output", required=True, help="output directory (created)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype inside the exported function (parameters stay float32)")
    p.add_argument("--shape", type=_shape_arg, default=None,
                   help="'symbolic' (default: any batch and size) or HxW for a fixed input size")
    p.add_argument("--platforms", type=_platforms_arg, default=list(export.PLATFORMS),
                   help="comma-separated lowering platforms, of "
                        f"{', '.join(export.KNOWN_PLATFORMS)} (default: {','.join(export.PLATFORMS)})")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
