"""adacode-jax: AdaCode (ICCV 2023) in JAX/Flax.

Networks live in :mod:`adacode_jax.models`, official-checkpoint conversion in
:mod:`adacode_jax.convert`. Arrays are NHWC, images float32 in [0, 1].
"""

__version__ = "0.1.0"
