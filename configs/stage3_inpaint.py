"""Stage III (paper §3.3): inpainting (scale 1, brush-stroke masks painted white).

    python -m adacode_jax.main --config configs/stage3_inpaint.py --workdir runs/inpaint \
        --config.train.stage2_checkpoint=runs/s2/export/generator

Variants: "" (paper) and "tiny".
"""
from adacode_jax import config_lib


def get_config(arg: str = ""):
    c = config_lib.base_config(stage=3, kind="inpaint")
    if arg == "tiny":
        config_lib.make_tiny(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use '' or 'tiny'")
    return c
