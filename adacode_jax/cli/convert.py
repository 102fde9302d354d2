"""``adacode-convert`` / ``python -m adacode_jax.cli.convert``: official AdaCode ``.pth`` files (and
``.npz`` / ``.safetensors`` ones in the same layout) to inference checkpoints (library:
:mod:`adacode_jax.inference.convert`)."""
from __future__ import annotations

import argparse
import os

from adacode_jax.cli import common

EXAMPLES = (
    "adacode-convert --kind sr_x4 --input AdaCode_SR_X4_model_g.pth --output ckpt/sr_x4",
    "adacode-convert --kind stage2 --input AdaCode_stage2_model_g.pth --output ckpt/stage2",
    "adacode-convert --kind sr_x4 --input sr_x4.safetensors --output ckpt/sr_x4   # from adacode-export",
    "adacode-restore --checkpoint ckpt/sr_x4 -i photo.jpg -o out/   # then use it",
)
KIND_HELP = ("network of the file: stage1 (one class codebook, a VQGAN), stage2 (AdaCode "
             "reconstruction), sr_x2 / sr_x4 (super-resolution), inpaint, disc (the U-Net "
             "discriminator); the release file names say which")


def build_parser() -> argparse.ArgumentParser:
    from adacode_jax import models
    p = common.ArgumentParser(prog="adacode-convert",
                              description="Convert an official AdaCode (PyTorch) state dict into an "
                                          "inference checkpoint directory (Orbax + model.json).",
                              examples=EXAMPLES)
    p.add_argument("--kind", required=True, choices=models.KINDS, help=KIND_HELP)
    p.add_argument("--input", required=True,
                   help="official .pth ({'params': ...}), flat .npz, or .safetensors (official "
                        "keys; the network config of its header when adacode-export wrote it)")
    p.add_argument("--output", required=True, help="directory for the checkpoint (created)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="keep random init for missing keys and drop unexpected ones")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --output, replacing its variables/ and model.json "
                        "(other files are kept); default: refuse")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import jax
    import numpy as np
    from adacode_jax.inference import convert
    convert.check_output(args.output, overwrite=args.overwrite)    # before any work
    try:
        cfg, variables, n_keys = convert.load_file(args.input, args.kind, strict=args.strict)
    except FileNotFoundError as e:
        return common.fail(f"{args.input}: {e.strerror or e}; check the path")
    except convert.ConversionError as e:
        text = str(e)
        return common.fail(text if text.startswith(args.input) else f"{args.input}: {text}")
    n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables.get("params", {})))
    out = convert.save_checkpoint(args.output, cfg, variables, overwrite=args.overwrite,
                                  extra={"source": os.path.abspath(args.input), "kind": args.kind})
    print(f"converted {n_keys} keys ({n:,} parameters) of {args.input} -> {out}")
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
