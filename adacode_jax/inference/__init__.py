"""Restoring images with a trained network: the :class:`~adacode_jax.inference.restorer.Restorer`,
tiling, folder jobs, the low-frequency fix, the codebook explorer, StableHLO export and the
conversion of official PyTorch checkpoints (with a reader for ``torch.save`` files)."""
