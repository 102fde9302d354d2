"""Device meshes and partition rules for training.

The mesh has two axes, ``data`` (batch) and ``fsdp`` (batch and large weights). Batches are
split over both; a weight with at least ``fsdp_min_size`` elements is split along its largest
dimension divisible by the ``fsdp`` size (FSDP); everything else, codebooks included, is
replicated. Axes are ``Auto``, so XLA places the collectives.
"""
from __future__ import annotations

import itertools
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
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


_BARRIERS = itertools.count()


def barrier(name: str, timeout_s: int = 3600) -> None:
    """Every process waits here until all have arrived (no-op with one process).

    Uses the coordination service of ``jax.distributed``, not a device collective: on CPU,
    a collective's first use sets up a gloo context that waits only 30 s for the other
    processes, and a process that compiles what another loads from the compilation cache can
    be later than that.
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost  # the distributed client, behind a stable name

    multihost.get_jax_distributed_client().wait_at_barrier(
        f"adacode:{name}:{next(_BARRIERS)}", timeout_in_ms=timeout_s * 1000)


def to_host(tree: Any) -> Any:
    """Numpy copies of the leaves of ``tree``, whole even when they span several hosts.

    Leaves sharded over other processes' devices are all-gathered (one program for all of
    them), so on a multi-host mesh this is a collective: every process must call it, with the
    same tree. Replicated leaves are copied from a local shard.
    """
    leaves, treedef = jax.tree.flatten(tree)

    def remote(a):
        return isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated

    def local(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:    # replicated
            return np.asarray(a.addressable_data(0))
        return np.asarray(jax.device_get(a))

    out = [None if remote(a) else local(a) for a in leaves]
    todo = [i for i, a in enumerate(leaves) if remote(a)]
    if todo:
        barrier("to_host")
        gathered = multihost_utils.process_allgather([leaves[i] for i in todo], tiled=True)
        for i, g in zip(todo, gathered):
            out[i] = np.asarray(g)
    return jax.tree.unflatten(treedef, out)


def from_host(tree: Any, shardings: Any) -> Any:
    """Global arrays of ``tree``'s host values, placed with ``shardings`` (one sharding, or a
    tree of them). Every process must hold the same whole values; each process copies only
    the shards of its own devices, so unlike ``jax.device_put`` on a multi-host mesh there is
    no cross-process equality check (a collective per leaf). Leaves that already are arrays
    with their target sharding are kept as they are."""
    def put(x, sharding):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: put(x, shardings), tree)
    return jax.tree.map(put, tree, shardings)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
