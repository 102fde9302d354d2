"""Stage III (paper §3.3): blind super-resolution x2 / x4 with the frozen AdaCode decoder.

    python -m adacode_jax.main --config configs/stage3_sr.py:x4 --workdir runs/sr_x4 \
        --config.train.stage2_checkpoint=runs/s2/export/generator

Variants: "x4" (default), "x2", each with ",tiny" (CPU smoke run) or ",compact" (the compact
recipe on the real-photo corpus; see docs/reproduction.md).
"""
from adacode_jax import config_lib

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
        config_lib.make_compact(c)
    return c
