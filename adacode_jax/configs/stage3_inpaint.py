"""Stage III (paper §3.3): inpainting (scale 1, brush-stroke masks painted white).

    python -m adacode_jax.main --config configs/stage3_inpaint.py --workdir runs/inpaint \
        --config.train.stage2_checkpoint=runs/s2/export/generator

Variants: "" (paper), "tiny" (CPU smoke run) and "compact" (the compact recipe).
"""
from adacode_jax.configs import _base as config_lib

# One line for `adacode-train --help` (adacode_jax.resources.config_summaries).
VARIANTS = "'' (paper, default) | tiny | compact"


def get_config(arg: str = ""):
    c = config_lib.base_config(stage=3, kind="inpaint")
    if arg == "tiny":
        config_lib.make_tiny(c)
    elif arg == "compact":
        # The compact recipe's choices for this stage (docs/reproduction.md):
        # lr_g, grad_clip: stage III diverged at 5e-4 (weight maps grew to ~30 and the loss to 1e6 after 160
        # steps of learning well); 2e-4 with gradients clipped to norm 1 (Adam then sees each
        # step's direction, and one spike cannot blow up its moments).
        # crop_size, batch_size: 256² crops, the size the model is used at (as configs/stage3_sr.py).
        config_lib.make_compact(c)
        c.data.crop_size = 256
        c.data.batch_size = 2
        c.train.num_steps = 1200
        c.train.lr_g = 2e-4
        c.train.grad_clip = 1.0
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use '', 'tiny' or 'compact'")
    return c
