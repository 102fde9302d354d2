"""Stage chaining: the exports a stage starts from and what it takes from them. Stage II reads
its codebooks (and optionally its encoder, decoder and convs) from the stage I exports; stage
III reads its teacher, most of its generator and its discriminator from the stage II export.

:func:`prepare_config` reads and checks those exports before anything is compiled;
:func:`apply_init` puts their weights into the freshly initialised state.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from adacode_jax import models, paths
from adacode_jax.configs import _base as config_lib
from adacode_jax.models import checkpointing
from adacode_jax.training import networks
from adacode_jax.training import sharding as sharding_lib
from adacode_jax.training import steps as steps_lib


def _load_export(path: str, what: str):
    try:
        cfg, variables, meta = checkpointing.load_inference(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what}: {e}") from None
    # host copies: these seed both the trained state and constants (the teacher), which must
    # not share device buffers, as the train step donates its state
    return cfg, jax.device_get(variables), meta


def _stage1_codebooks(exports) -> list[np.ndarray]:
    """The codebook of each stage I export (``quantize_group.0.embedding``), in order."""
    books = []
    for p in exports:
        cfg, variables, _ = _load_export(p, "train.stage1_checkpoints")
        if not cfg.get("single_codebook", False):
            raise config_lib.ConfigError(
                f"train.stage1_checkpoints: {p} holds a {cfg.get('kind')!r} network, not a "
                "stage I (one codebook) export; list the stage I runs' export/generator "
                "directories")
        try:
            books.append(np.asarray(variables["params"]["quantize_group.0"]["embedding"]))
        except KeyError:
            raise config_lib.ConfigError(
                f"{p}: no quantize_group.0 codebook; is it a stage I export?") from None
    return books


def _copy_matching(dst: dict, src: dict) -> tuple[dict, int]:
    """BasicSR's ``strict=False`` load: take every same-name, same-shape leaf of ``src``.

    Stage III checks first (:func:`_check_stage2_fits`) that every leaf it must take is there.
    """
    flat_dst, flat_src = traverse_util.flatten_dict(dst), traverse_util.flatten_dict(src)
    n = 0
    for k, v in flat_src.items():
        if k in flat_dst and tuple(flat_dst[k].shape) == tuple(np.shape(v)):
            flat_dst[k] = jnp.asarray(v, flat_dst[k].dtype)
            n += 1
    return traverse_util.unflatten_dict(flat_dst), n


def _shapes(tree) -> dict[str, tuple]:
    return {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(tree).items()}


def hq_twin(model_cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The stage II (HQ) network of the same sizes as a stage III ``model_cfg``."""
    c = ml_collections.ConfigDict(model_cfg.to_dict())
    c.kind, c.lq_stage, c.scale_factor = "stage2", False, 1
    return c


def stage2_leaves(config) -> tuple[dict[str, tuple], list[str]]:
    """``(required, kept)`` for a stage III ``config``: the generator leaves (``/``-joined name
    -> shape) that must come from the stage II export, and those that stay at initialisation.

    Required: every leaf outside ``multiscale_encoder`` (the frozen ``quantize_group.*``,
    ``decoder_group.*``, ``after_quant_group.*``, ``out_conv`` of ``config_lib.FROZEN[3]``, and
    the trained-on ``before_quant_group.*`` and ``weight_predictor``), plus the LQ encoder
    leaves whose name and shape the HQ encoder of the same sizes has: ``in_conv`` and the down
    stages ``blocks.0 .. blocks.{depth-1}`` where the widths agree, and, as BasicSR's
    ``strict=False`` load takes them by name, the same-shape ResBlocks of an up stage whose
    index an HQ down stage also has (tiny x4: ``blocks.2/2``).
    Kept at init: the rest of the LQ encoder, which the HQ network lacks or has in another
    shape: its Swin stack ``blocks.{depth}``, the up stages ``blocks.{depth+1}``,
    ``blocks.{depth+2}`` feeding the decoder shortcuts (but for the ResBlocks above), and
    ``in_conv`` / down stages whose width differs from the HQ encoder's (``C[r]`` of another
    input resolution ``r``).
    """
    gt_shape, lq_shape = networks.input_shapes(config)
    key = jax.random.key(0)
    g = _shapes(jax.eval_shape(models.build(config.model).init, key,
                               jnp.zeros(lq_shape, jnp.float32))["params"])
    hq = _shapes(jax.eval_shape(models.build(hq_twin(config.model)).init, key,
                                jnp.zeros(gt_shape, jnp.float32))["params"])
    required, kept = {}, []
    for k, shape in g.items():
        if not k.startswith("multiscale_encoder/") or hq.get(k) == shape:
            required[k] = shape
        else:
            kept.append(k)
    return required, kept


def _listing(items: list[str], n: int = 6) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _check_stage2_fits(config, teacher: dict, disc: dict | None, g_path: str, d_path: str):
    """Refuse a stage II export that does not give stage III every leaf it takes from it."""
    required, _ = stage2_leaves(config)
    have = _shapes(teacher["params"])
    missing = [k for k in required if k not in have]
    wrong = [f"{k} {have[k]} vs {required[k]}" for k in required
             if k in have and have[k] != required[k]]
    if missing or wrong:
        parts = ([f"missing {_listing(missing)}"] if missing else []) + (
            [f"other shapes (export vs network) {_listing(wrong)}"] if wrong else [])
        raise config_lib.ConfigError(
            f"train.stage2_checkpoint: {g_path} does not fit the stage III network "
            f"({len(missing) + len(wrong)} of {len(required)} leaves it must take): "
            + "; ".join(parts) + "; use the stage II export trained with the same "
            "model.* sizes, or make model.* match it")
    if disc is not None:
        _check_disc_fits(config, disc, d_path)


def _misfits(net_cfg: ml_collections.ConfigDict, input_shape: tuple, tree: dict) -> list[str]:
    """The leaves (``/``-joined) that ``tree`` lacks, has in excess or in another shape than
    the variables (of the collections ``tree`` holds) of the network ``net_cfg`` on inputs of
    ``input_shape``."""
    want = _shapes(jax.eval_shape(models.build(net_cfg).init, jax.random.key(0),
                                  jnp.zeros(input_shape, jnp.float32)))
    want = {k: v for k, v in want.items() if k.split("/")[0] in tree}   # its collections
    got = _shapes(tree)
    return sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))


def _check_disc_fits(config, disc: dict, d_path: str, what: str = "train.stage2_disc_checkpoint"):
    """Refuse a discriminator export that does not fit ``config.disc``."""
    gt_shape, _ = networks.input_shapes(config)
    bad = _misfits(config.disc, gt_shape, {c: disc[c] for c in disc})
    if bad:
        raise config_lib.ConfigError(
            f"{what}: {d_path} does not fit disc.* ({len(bad)} leaves missing, extra or of "
            f"another shape: {_listing(bad)}); use the discriminator of the same run, or make "
            "disc.* match it")


def prepare_config(config: ml_collections.ConfigDict):
    """Resolve stage chaining inputs that change the network (codebook sizes) and validate.

    Returns ``(config, init)`` where ``init`` holds the host arrays to start from.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config_lib.validate(config)            # before reading any file the config names
    init: dict[str, Any] = {}
    t = config.train
    if config.stage == 2 and not t.stage1_checkpoints and not t.get("allow_random_codebooks", False):
        raise config_lib.ConfigError(
            "train.stage1_checkpoints is empty: stage II would mix random, frozen "
            "codebooks; list the stage I exports (--config.train.stage1_checkpoints="
            "'(\"runs/s1_<class>/export/generator\", ...)') or set "
            "train.allow_random_codebooks=True for an experiment")
    if config.stage == 2 and t.stage1_checkpoints:
        _read_stage1(config, init)
    if config.stage == 3:
        d_path = _read_stage2(config, init)
    config_lib.validate(config)
    if config.stage == 3:
        _check_stage2_fits(config, init["teacher"], init.get("disc"), t.stage2_checkpoint, d_path)
    if t.get("init_checkpoint"):
        _read_start(config, init)
    return config, init


def _discriminator_beside(generator_export: str) -> str:
    """Where a run exported the discriminator of ``generator_export`` (``export/discriminator``
    beside ``export/generator``)."""
    return os.path.join(os.path.dirname(paths.absolute(generator_export).rstrip("/")),
                        "discriminator")


def _read_start(config, init: dict) -> None:
    """``train.init_checkpoint``: the export's G (and its run's D, if exported) into ``init``,
    refused unless it is the network ``config`` trains, leaf for leaf."""
    path = config.train.init_checkpoint
    cfg, variables, _ = _load_export(path, "train.init_checkpoint")
    if cfg.get("kind") != config.model.kind:
        raise config_lib.ConfigError(
            f"train.init_checkpoint: {path} holds a {cfg.get('kind')!r} network and this run "
            f"trains {config.model.kind!r}; give an export of the same kind")
    _, lq_shape = networks.input_shapes(config)
    bad = _misfits(config.model, lq_shape, {"params": variables["params"]})
    if bad:
        raise config_lib.ConfigError(
            f"train.init_checkpoint: {path} does not fit model.* ({len(bad)} leaves missing, "
            f"extra or of another shape: {_listing(bad)}); give an export of this network, or "
            "make model.* match it")
    init["start"] = {"params": variables["params"]}
    d_path = _discriminator_beside(path)
    if paths.exists(os.path.join(d_path, checkpointing.MODEL_JSON)):
        _, disc, _ = _load_export(d_path, "train.init_checkpoint")
        _check_disc_fits(config, disc, d_path, "train.init_checkpoint")
        init["start_disc"] = disc


def _read_stage1(config, init: dict) -> None:
    """Stage II: the stage I codebooks (and, with ``train.stage2_init_from_stage1``, their
    exports' parameters) into ``init``; the codebook sizes into ``config.model``."""
    t = config.train
    books = _stage1_codebooks(t.stage1_checkpoints)
    config.model.codebooks = tuple(tuple(b.shape) for b in books)
    init["codebooks"] = books
    if t.get("stage2_init_from_stage1", False):
        init["stage1_params"] = [_load_export(p, "train.stage1_checkpoints")[1]["params"]
                                 for p in t.stage1_checkpoints]


def _read_stage2(config, init: dict) -> str:
    """Stage III: the stage II generator (the teacher) and, if there is one, its discriminator
    into ``init``; the codebook sizes into ``config.model``. Returns the discriminator's path."""
    t = config.train
    cfg_hq, teacher, _ = _load_export(t.stage2_checkpoint, "train.stage2_checkpoint")
    if cfg_hq.get("lq_stage", False) or cfg_hq.get("single_codebook", False):
        raise config_lib.ConfigError(
            f"{t.stage2_checkpoint}: expected a stage II (HQ, K codebooks) network")
    config.model.codebooks = tuple(tuple(c) for c in cfg_hq.codebooks)
    init["teacher_cfg"], init["teacher"] = cfg_hq, {"params": teacher["params"]}
    d_path = t.stage2_disc_checkpoint or _discriminator_beside(t.stage2_checkpoint)
    if paths.exists(os.path.join(d_path, checkpointing.MODEL_JSON)):
        _, init["disc"], _ = _load_export(d_path, "train.stage2_disc_checkpoint")
    elif t.stage2_disc_checkpoint:
        raise FileNotFoundError(f"train.stage2_disc_checkpoint: {d_path} has no model.json")
    return d_path


def _init_from_stage1(g: dict, stage1: list) -> tuple[dict, int]:
    """Stage II starting from stage I (``train.stage2_init_from_stage1``): the encoder, decoder
    and ``out_conv`` of the first stage I export, and each codebook's own ``before_quant`` and
    ``after_quant`` convs from its export (stage I stores the latter as
    ``after_quant_group.0.conv``). The weight predictor starts fresh."""
    first = {k: v for k, v in stage1[0].items()
             if k.startswith(("multiscale_encoder", "decoder_group", "out_conv"))}
    g, n = _copy_matching(g, first)
    for k, p in enumerate(stage1):
        pairs = ((f"before_quant_group.{k}", p["before_quant_group.0"]),
                 (f"after_quant_group.{k}", p["after_quant_group.0"]["conv"]))
        for name, src in pairs:
            g[name], m = _copy_matching(g[name], src)
            n += m
    return g, n


def apply_init(state, init: dict, nets, stage: int, state_sh):
    """Chain stages: codebooks from stage I (stage II); G and D from stage II (stage III);
    then everything from ``train.init_checkpoint`` where it is set."""
    g = sharding_lib.to_host(state.g_params)
    d_params, d_spectral = state.d_params, state.d_spectral
    if "codebooks" in init:
        for k, book in enumerate(init["codebooks"]):
            g[f"quantize_group.{k}"]["embedding"] = np.asarray(book, np.float32)
        logging.info("stage II: %d codebooks from stage I", len(init["codebooks"]))
    if "stage1_params" in init:
        g, n = _init_from_stage1(g, init["stage1_params"])
        logging.info("stage II: %d generator leaves initialised from the stage I exports", n)
    if "teacher" in init:
        n_before = len(traverse_util.flatten_dict(g))
        g, n = _copy_matching(g, init["teacher"]["params"])
        logging.info("stage III: %d of %d generator leaves initialised from stage II (the rest "
                     "is the LQ encoder's own, see stage2_leaves)", n, n_before)
    if "disc" in init:
        d_params = init["disc"]["params"]
        d_spectral = init["disc"]["spectral"]
    if "start" in init:
        g, n = _copy_matching(g, init["start"]["params"])
        logging.info("train.init_checkpoint: all %d generator leaves from the export%s", n,
                     ", and the discriminator" if "start_disc" in init else "")
    if "start_disc" in init:
        d_params = init["start_disc"]["params"]
        d_spectral = init["start_disc"]["spectral"]
    trainable, _ = steps_lib.split_params(g, nets.frozen)
    new = state.replace(g_params=g, d_params=d_params, d_spectral=d_spectral,
                        g_opt=nets.g_tx.init(trainable), d_opt=nets.d_tx.init(d_params))
    return sharding_lib.from_host(new, state_sh)
