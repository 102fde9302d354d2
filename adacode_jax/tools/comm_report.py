"""What the sharded train step sends between devices, read from its compiled HLO.

    python -m adacode_jax.cli.comm_report --config configs/stage3_sr.py:x4 --devices 8 [--fsdp 1]

Builds the train step exactly as :func:`adacode_jax.training.networks.jit_train_step` compiles it for a
``(data, fsdp)`` mesh of ``--devices`` CPU devices (fake ones are enough: the partitioned
program, not the hardware, decides the collectives), lists every all-reduce, reduce-scatter,
all-gather, all-to-all and collective-permute with its shape, and compares the bytes with the
trainable parameters. Data parallelism should all-reduce about 1x the trainable parameter
bytes per step (the gradients of G and D) and gather no activations; FSDP trades that for a
reduce-scatter of the gradients plus all-gathers of the sharded weights.

Byte counts are per device and per step: the size of each collective's result (for a
reduce-scatter, its input: the gradient slice times the group size).
"""
from __future__ import annotations

import re

KINDS = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r")\[([0-9,]*)\]")
_OP = re.compile(r"=\s*(?P<shape>.+?)\s+(?P<kind>" + "|".join(KINDS)
                 + r")(?P<start>-start)?\((?P<rest>.*)$")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([0-9,]*)\}")


def _arrays(shape_text: str) -> list[tuple[str, tuple[int, ...], int]]:
    out = []
    for dtype, dims in _ARRAY.findall(shape_text):
        shape = tuple(int(d) for d in dims.split(",") if d)
        n = 1
        for d in shape:
            n *= d
        out.append((dtype, shape, n * _BYTES[dtype]))
    return out


def _group_size(rest: str) -> int:
    m = _GROUPS_IOTA.search(rest)
    if m:
        return int(m.group(2))
    m = _GROUPS_LIST.search(rest)
    return len(m.group(1).split(",")) if m and m.group(1) else 1


def collectives(hlo_text: str) -> list[dict]:
    """Every collective of a compiled HLO module: kind, result arrays, bytes, group size.

    Async pairs (``all-reduce-start`` / ``-done`` on GPU and TPU) count once, at the start.
    """
    ops = []
    for line in hlo_text.splitlines():
        m = _OP.search(line)
        if not m:
            continue
        kind, rest = m.group("kind"), m.group("rest")
        arrays = _arrays(m.group("shape"))
        group = _group_size(rest)
        if m.group("start") and kind in ("all-gather", "collective-permute"):
            arrays = arrays[len(arrays) // 2:]    # (operands, results) tuples: keep the results
        nbytes = sum(a[2] for a in arrays)
        if kind == "reduce-scatter":
            nbytes *= group
        name = line.split("=")[0].strip().lstrip("%").replace("ROOT ", "")
        meta = re.search(r'op_name="([^"]*)"', line)
        ops.append({"kind": kind, "name": name, "bytes": nbytes, "group": group,
                    "shapes": [f"{d}{list(s)}" for d, s, _ in arrays],
                    "op_name": meta.group(1) if meta else ""})
    return ops


def summarize(ops: list[dict], param_bytes: dict[str, int]) -> dict:
    """Totals per kind and the ratios the data-parallel check looks at."""
    totals = {k: {"count": 0, "bytes": 0} for k in KINDS}
    for op in ops:
        totals[op["kind"]]["count"] += 1
        totals[op["kind"]]["bytes"] += op["bytes"]
    trainable = param_bytes["trainable"]
    reduce_bytes = totals["all-reduce"]["bytes"] + totals["reduce-scatter"]["bytes"]
    return {
        "param_bytes": param_bytes,
        "collectives": {k: v for k, v in totals.items() if v["count"]},
        "reduce_bytes_over_trainable": reduce_bytes / trainable,
        "gather_bytes_over_trainable": totals["all-gather"]["bytes"] / trainable,
        "largest": sorted(ops, key=lambda o: -o["bytes"])[:12],
    }


def teacher_config(model_cfg):
    """The stage II (HQ) network a stage III generator is trained against: same sizes."""
    from adacode_jax.training import stages

    return stages.hq_twin(model_cfg)


def compile_step(config, num_devices: int | None = None):
    """(compiled step, abstract state) of ``config`` on the first ``num_devices`` devices."""
    import jax
    import jax.numpy as jnp

    from adacode_jax import models
    from adacode_jax.training import networks
    from adacode_jax.training import sharding as sharding_lib

    devices = jax.devices()[:num_devices] if num_devices else jax.devices()
    mesh = sharding_lib.make_mesh(config.mesh, devices)
    init = {}
    if int(config.stage) == 3:
        # the teacher's weights only as shapes: the collectives do not depend on their values
        t_cfg = teacher_config(config.model)
        s = int(config.data.crop_size)
        t_vars = jax.eval_shape(models.build(t_cfg).init, jax.random.key(0),
                                jnp.zeros((1, s, s, 3), jnp.float32))
        init = {"teacher_cfg": t_cfg, "teacher": {"params": t_vars["params"]}}
    nets, consts = networks.build_networks(config, init)     # as training builds them
    consts = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), consts)
    t = config.train
    abstract = jax.eval_shape(networks.init_fn(config, nets))
    state_sh = sharding_lib.tree_shardings(abstract, mesh, int(config.mesh.fsdp_min_size))
    state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                         abstract, state_sh)
    gt_shape, lq_shape = networks.input_shapes(config)
    b = int(config.data.batch_size)
    batch = {"gt": jax.ShapeDtypeStruct((b, *gt_shape[1:]), jnp.float32)}
    if int(config.stage) == 3:
        batch["lq"] = jax.ShapeDtypeStruct((b, *lq_shape[1:]), jnp.float32)
    step = networks.jit_train_step(nets, t, int(config.stage), mesh, state_sh)
    return step.lower(state, batch, consts).compile(), abstract, nets


def param_bytes(abstract_state, frozen) -> dict[str, int]:
    """Bytes of the generator (all, trainable) and discriminator parameters."""
    import jax

    from adacode_jax.training import steps as steps_lib

    def nbytes(tree):
        return int(sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(tree)))

    trainable_g, _ = steps_lib.split_params(abstract_state.g_params, frozen)
    g, tg, d = nbytes(abstract_state.g_params), nbytes(trainable_g), nbytes(abstract_state.d_params)
    return {"generator": g, "generator_trainable": tg, "discriminator": d, "trainable": tg + d}


def report(config, num_devices: int | None = None) -> dict:
    """Compile the step of ``config`` and summarise its collectives (see the module doc)."""
    compiled, abstract, nets = compile_step(config, num_devices)
    ops = collectives(compiled.as_text())
    out = summarize(ops, param_bytes(abstract, nets.frozen))
    out["mesh"] = {"data": int(config.mesh.data), "fsdp": int(config.mesh.fsdp),
                   "devices": num_devices}
    out["global_batch"] = int(config.data.batch_size)
    return out
