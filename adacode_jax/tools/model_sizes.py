"""Parameter counts and forward GFLOPs of the model families, per 256² output image.

    python -m adacode_jax.cli.model_sizes [--family compact] [--family official] [--family tiny]

FLOPs come from XLA's cost analysis of the float32 forward on one image (256² input for stages
I/II, 64² for ×4, 128² for ×2, 256² for inpainting; multiply-adds count as two), lowered with
XLA's convolutions and not compiled: the count of the program before optimisation, within 0.4%
of the compiled program's for every compact network, in seconds instead of a minute. The
discriminator is counted on a 256² image. Printed as a Markdown table.
"""
from __future__ import annotations

FAMILIES = ("tiny", "compact", "official")
INPUT = {"stage1": 256, "stage2": 256, "sr_x4": 64, "sr_x2": 128, "inpaint": 256, "disc": 256}


def model_config(family: str, kind: str):
    from adacode_jax import models

    if family == "tiny":
        return models.tiny_model_config(kind)
    if family == "compact":
        return models.compact_model_config(kind)
    return models.model_config(kind)


def size(family: str, kind: str) -> dict:
    """``{"params", "gflops"}`` of one network."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from adacode_jax import models
    from adacode_jax.ops import winograd

    net = models.build(model_config(family, kind))
    x = jnp.zeros((1, INPUT[kind], INPUT[kind], 3), jnp.float32)
    variables = jax.eval_shape(net.init, jax.random.key(0), x)
    params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))
    # XLA's convolutions: its cost analysis counts nothing for the CPU kernel's custom call
    with winograd.forced("0"):
        lowered = jax.jit(lambda v, x: net.apply(v, x)).lower(variables, x)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"params": params, "gflops": float(cost.get("flops", float("nan"))) / 1e9}


def table(families) -> str:
    from adacode_jax import models

    lines = ["| family | network | input | parameters | GFLOPs / image |", "|---|---|---|---|---|"]
    for family in families:
        for kind in models.KINDS:
            s = size(family, kind)
            lines.append(f"| {family} | {kind} | {INPUT[kind]}² | {s['params']:,} | "
                         f"{s['gflops']:.1f} |")
    return "\n".join(lines)
