"""adacode-jax: AdaCode (ICCV 2023) in JAX/Flax. Arrays are NHWC, images float32 in [0, 1].

The stable public API (these names keep their paths across releases; CHANGELOG.md lists moves):

    from adacode_jax import Restorer       # restore images: Restorer.from_checkpoint(...)
    from adacode_jax import load_official  # (model, variables) from an official .pth
    from adacode_jax import build_model, model_config   # the networks by kind
    from adacode_jax import load_config    # an experiment config: "stage3_sr:x4,tiny"

The packages, one concern each:

- ``models/``: the AdaCode networks, the perceptual networks, ``models/peers/`` (Real-ESRGAN);
- ``ops/``: the CPU convolution paths and the Winograd kernel;
- ``data/``: the training input pipeline (sources, BSRGAN degradations, masks);
- ``training/``: the loop, its workdir, the jitted steps, losses, sharding, console;
- ``inference/``: the Restorer, tiling, folder jobs, export, official-checkpoint conversion;
- ``evaluation/``: metrics, evaluate, compare, report, pictures;
- ``configs/``: the base config and one file per experiment;
- ``tools/``: the corpus, the segmentation split, test sets, benchmarks, ``make demo``;
- ``app/``: the web app; ``cli/``: every command-line front end, and nothing else.

Nothing heavy is imported until a name above is used (``adacode-train --help`` stays fast).
"""

__version__ = "0.2.0"

# name -> (module, attribute), imported on first use
_PUBLIC = {
    "Restorer": ("adacode_jax.inference.restorer", "Restorer"),
    "load_official": ("adacode_jax.inference.convert", "load_official"),
    "build_model": ("adacode_jax.models", "build"),
    "model_config": ("adacode_jax.models", "model_config"),
    "load_config": ("adacode_jax.resources", "load_config"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'adacode_jax' has no attribute {name!r}")
    import importlib

    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)
