"""Stage II (paper §3.2): AdaCode reconstruction, K frozen basis codebooks mixed by a Swin
weight predictor.

    python -m adacode_jax.main --config configs/stage2_adacode.py --workdir runs/s2 \
        --config.train.stage1_checkpoints='("runs/s1_architecture/export/generator", ...)'

Variants: "" (paper), "tiny" (CPU smoke run), "compact" (the compact recipe: K = 3 basis
codebooks from the compact stage I runs) and "compact,single" (the Table 1 baseline: one
codebook holding as many codes, from the stage I ``all,compact`` run; its weight predictor
has one map).
"""
from adacode_jax.configs import _base as config_lib

# One line for `adacode-train --help` (adacode_jax.resources.config_summaries).
VARIANTS = "'' (paper, default) | tiny | compact | compact,single (one-codebook baseline)"


def get_config(arg: str = ""):
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in ("tiny", "compact", "single")]
    if unknown or ("tiny" in parts and "compact" in parts) or ("single" in parts
                                                                and "compact" not in parts):
        raise ValueError(f"unknown variant {arg!r}; use '', 'tiny', 'compact' or 'compact,single'")
    c = config_lib.base_config(stage=2, kind="stage2")
    if "tiny" in parts:
        config_lib.make_tiny(c)
    if "compact" in parts:
        # The compact recipe's choices for this stage (docs/reproduction.md):
        # stage2_init_from_stage1: encoder, decoder and the before/after-quant convs from the
        # stage I exports (a fresh encoder collapses onto a few codes of the frozen codebooks
        # in a short run).
        config_lib.make_compact(c)
        c.train.num_steps = 1000
        c.train.lr_g = 5e-4
        c.train.stage2_init_from_stage1 = True
        if "single" in parts:
            c.model.codebooks = ((768, 64),)
    return c
