"""Stage II (paper §3.2): AdaCode reconstruction, K frozen basis codebooks mixed by a Swin
weight predictor.

    python -m adacode_jax.main --config configs/stage2_adacode.py --workdir runs/s2 \
        --config.train.stage1_checkpoints='("runs/s1_architecture/export/generator", ...)'

Variants: "" (paper) and "tiny".
"""
from adacode_jax import config_lib


def get_config(arg: str = ""):
    c = config_lib.base_config(stage=2, kind="stage2")
    if arg == "tiny":
        config_lib.make_tiny(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use '' or 'tiny'")
    return c
