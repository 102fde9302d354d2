"""Stage III (paper §3.3): inpainting (scale 1, brush-stroke masks painted white).

    python -m adacode_jax.main --config configs/stage3_inpaint.py --workdir runs/inpaint \
        --config.train.stage2_checkpoint=runs/s2/export/generator

Variants: "" (paper), "tiny" (CPU smoke run) and "compact" (the compact recipe).
"""
from adacode_jax import config_lib

# One line for `adacode-train --help` (adacode_jax.resources.config_summaries).
VARIANTS = "'' (paper, default) | tiny | compact"


def get_config(arg: str = ""):
    c = config_lib.base_config(stage=3, kind="inpaint")
    if arg == "tiny":
        config_lib.make_tiny(c)
    elif arg == "compact":
        config_lib.make_compact(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use '', 'tiny' or 'compact'")
    return c
