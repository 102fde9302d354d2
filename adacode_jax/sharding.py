"""Device meshes and partition rules for training.

The mesh has two axes, ``data`` (batch) and ``fsdp`` (batch and large weights). Batches are
split over both; a weight with at least ``fsdp_min_size`` elements is split along its largest
dimension divisible by the ``fsdp`` size (FSDP); everything else, codebooks included, is
replicated. Axes are ``Auto``, so XLA places the collectives.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A ``(data, fsdp)`` mesh; a size of −1 takes the devices left over."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    data, fsdp = int(mesh_cfg.data), int(mesh_cfg.fsdp)
    if data == -1 and fsdp == -1:
        raise ValueError("mesh.data and mesh.fsdp cannot both be -1")
    if data == -1:
        data = n // fsdp
    if fsdp == -1:
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh data={mesh_cfg.data} x fsdp={mesh_cfg.fsdp} does not use the "
                         f"{n} devices; set mesh.data and mesh.fsdp so their product is {n}")
    return jax.make_mesh((data, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2,
                         devices=devices)


def param_spec(path: tuple, shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """FSDP spec of one parameter: its largest dimension divisible by ``fsdp``, if big."""
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if fsdp <= 1 or int(np.prod(shape)) < min_size or any("quantize_group" in n for n in names):
        return P()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % fsdp == 0:
            spec = [None] * len(shape)
            spec[d] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, min_size: int) -> Any:
    """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(mesh, param_spec(path, tuple(leaf.shape), fsdp, min_size)),
        tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
