"""What a stage trains and how its step runs: the networks, loss networks and optimisers of a
config (:func:`build_networks`), its freshly initialised state (:func:`init_fn`), and the train
step jitted with the state's shardings (:func:`jit_train_step`)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from adacode_jax import models
from adacode_jax.models import perceptual
from adacode_jax.training import sharding as sharding_lib
from adacode_jax.training import steps as steps_lib


def input_shapes(config) -> tuple[tuple, tuple]:
    """``(gt, lq)`` NHWC shapes of one training example of ``config`` (batch 1)."""
    s, sf = config.data.crop_size, config.model.scale_factor
    lq = s // sf if config.data.task == "sr" else s
    return (1, s, s, 3), (1, lq, lq, 3)


def build_networks(config, init: dict):
    """``(nets, consts)`` of ``config``'s train step: G, D, the loss networks and optimisers,
    and the constant weights the step takes as an argument (LPIPS-vgg, the stage I VGG19,
    the stage III teacher from ``init["teacher_cfg"]`` / ``init["teacher"]``, see
    :func:`adacode_jax.training.stages.prepare_config`)."""
    t = config.train
    stage = int(config.stage)
    consts: dict[str, Any] = {}
    lpips_vgg = vgg19 = teacher = None
    if t.w_lpips > 0:
        lpips_vgg, consts["lpips"] = perceptual.load_lpips("vgg")
    if stage == 1 and config.model.use_semantic_loss and t.w_semantic > 0:
        vgg19, consts["vgg19"] = perceptual.load_vgg19(t.vgg19_path or None)
    if stage == 3:
        teacher = models.build(init["teacher_cfg"])
        consts["teacher"] = init["teacher"]
    g_tx, d_tx = steps_lib.optimizers(t)
    nets = steps_lib.Networks(models.build(config.model), models.build(config.disc), lpips_vgg,
                              vgg19, teacher, g_tx, d_tx, tuple(t.frozen))
    return nets, consts


def init_fn(config, nets):
    """``() -> TrainState``: freshly initialised networks (``config.seed``) and optimisers."""
    gt_shape, lq_shape = input_shapes(config)
    rng_g, rng_d = jax.random.split(jax.random.key(int(config.seed)))

    def fresh_state():
        g_in = jnp.zeros(lq_shape if int(config.stage) == 3 else gt_shape, jnp.float32)
        g_params = nets.generator.init(rng_g, g_in)["params"]
        d_vars = nets.discriminator.init(rng_d, jnp.zeros(gt_shape, jnp.float32))
        return steps_lib.init_state(nets, g_params, d_vars)
    return fresh_state


def init_compiler_options() -> dict | None:
    """XLA options for the one-off initialisation program: on CPU, LLVM at -O0. The program
    runs once, so its compile time is all that counts (a tiny stage III state: 17.5 s -> 6.8 s);
    the values equal the default level's to float32 rounding (tests/test_opt_level.py)."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def jit_train_step(nets, train_cfg, stage: int, mesh, state_sh):
    """The train step as training runs it (and :mod:`adacode_jax.tools.comm_report` inspects it):
    the state in its FSDP shardings and donated, the batch split over ``(data, fsdp)``, the
    constants replicated. Scalars and code histograms come back replicated; images and weight
    maps stay batch-sharded, so no step gathers activations (they are fetched when logged)."""
    rep, batch = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
    outputs_sh = {"out": batch, "usage": rep}
    if float(train_cfg.codebook_restart_every) > 0:
        outputs_sh["feat"] = batch
    if not nets.generator.single_codebook:
        outputs_sh["weight_maps"] = batch
    one_batch = int(train_cfg.d_one_batch)
    one_batch = mesh.size > 1 if one_batch == -1 else bool(one_batch)
    return jax.jit(steps_lib.make_train_step(nets, train_cfg, stage, d_one_batch=one_batch),
                   in_shardings=(state_sh, batch, rep), out_shardings=(state_sh, rep, outputs_sh),
                   donate_argnums=(0,))
