"""Stage III (paper §3.3): blind super-resolution x2 / x4 with the frozen AdaCode decoder.

    python -m adacode_jax.main --config configs/stage3_sr.py:x4 --workdir runs/sr_x4 \
        --config.train.stage2_checkpoint=runs/s2/export/generator

Variants: "x4" (default), "x2", each with ",tiny" (CPU smoke run) or ",compact" (the compact
recipe on the real-photo corpus; see docs/reproduction.md).
"""
from adacode_jax.configs import _base as config_lib

# One line for `adacode-train --help` (adacode_jax.resources.config_summaries).
VARIANTS = "x4 (default) | x2; add ,tiny (CPU smoke run) or ,compact (real-photo recipe)"


def get_config(arg: str = "x4"):
    parts = [p for p in (arg or "x4").split(",") if p]
    scale = "x2" if "x2" in parts else "x4"
    unknown = [p for p in parts if p not in ("x2", "x4", "tiny", "compact")]
    if unknown or ("tiny" in parts and "compact" in parts):
        raise ValueError(f"unknown variant {arg!r}; use x2 or x4, optionally with ',tiny' or "
                         f"',compact'")
    c = config_lib.base_config(stage=3, kind=f"sr_{scale}")
    if "tiny" in parts:
        config_lib.make_tiny(c)
    if "compact" in parts:
        # The compact recipe's choices for this stage (docs/reproduction.md):
        # lr_g, grad_clip: stage III diverged at 5e-4 (weight maps grew to ~30 and the loss to 1e6 after 160
        # steps of learning well); 2e-4 with gradients clipped to norm 1 (Adam then sees each
        # step's direction, and one spike cannot blow up its moments).
        # crop_size, batch_size: 256² GT crops, the paper's and the size the model is used at.
        # Trained on 96² crops (the first shipped model), the network shifted colour and
        # brightness on whole 256² images, GroupNorm's statistics being those of a larger
        # area (held-out PSNR-Y 16.6 dB alone, against bicubic's 21.9); batch 2 keeps a step
        # at 3.6x the pixels of the 96² batch of 4.
        config_lib.make_compact(c)
        c.data.crop_size = 256
        c.data.batch_size = 2
        c.train.num_steps = 1200
        c.train.lr_g = 2e-4
        c.train.grad_clip = 1.0
    return c
