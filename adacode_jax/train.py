"""``train_and_evaluate(config, workdir)``: one training stage, from initialisation (or the
latest checkpoint in ``workdir``) to the exported inference weights.

Data path: Grain host batches -> global arrays over the mesh -> jitted G/D step -> metrics,
pictures, validation, Orbax checkpoints. Side effects (files, TensorBoard, logs) only on
process 0, except checkpoints, which every host writes its part of.

``workdir`` layout::

    checkpoints/<step>/{state,data,config}   Orbax (auto-resume from the latest)
    tensorboard/                             clu writers: scalars, images
    export/{generator,discriminator}/        inference weights at the end (checkpointing.save_inference)
    best/generator/                          the best validation LPIPS so far (as the reference)
"""
from __future__ import annotations

import functools
import os
import signal
import threading
import time
from typing import Any

# Before clu imports TensorFlow: no C++ start-up lines (oneDNN, CUDA probing) on the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # TF only reads data and writes logs here; its oneDNN note is noise

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from clu import metric_writers, parameter_overview, periodic_actions  # noqa: E402
from flax import traverse_util  # noqa: E402

from adacode_jax import checkpointing, config_lib, console, errors  # noqa: E402
from adacode_jax import metrics as metrics_lib, models, paths, perceptual  # noqa: E402
from adacode_jax import sharding as sharding_lib  # noqa: E402
from adacode_jax import steps as steps_lib  # noqa: E402
from adacode_jax import visualize  # noqa: E402
from adacode_jax.data import io as data_io  # noqa: E402
from adacode_jax.data import make_testset, pipeline, sources  # noqa: E402


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the terms."""


# ---- initialisation and stage chaining ----------------------------------------------------

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
            raise ValueError(f"train.stage1_checkpoints: {p} holds a {cfg.get('kind')!r} network, "
                             "not a stage I (one codebook) export; list the stage I runs' "
                             "export/generator directories")
        try:
            books.append(np.asarray(variables["params"]["quantize_group.0"]["embedding"]))
        except KeyError:
            raise ValueError(f"{p}: no quantize_group.0 codebook; is it a stage I export?") from None
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
    gt_shape, lq_shape = _input_shapes(config)
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
        raise ValueError(f"train.stage2_checkpoint: {g_path} does not fit the stage III network "
                         f"({len(missing) + len(wrong)} of {len(required)} leaves it must take): "
                         + "; ".join(parts) + "; use the stage II export trained with the same "
                         "model.* sizes, or make model.* match it")
    if disc is not None:
        gt_shape, _ = _input_shapes(config)
        want = _shapes(jax.eval_shape(models.build(config.disc).init, jax.random.key(0),
                                      jnp.zeros(gt_shape, jnp.float32)))
        got = _shapes({c: disc[c] for c in disc})
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if bad:
            raise ValueError(
                f"train.stage2_disc_checkpoint: {d_path} does not fit disc.* ({len(bad)} leaves "
                f"missing, extra or of another shape: {_listing(bad)}); use the discriminator "
                "of the same stage II run, or make disc.* match it")


def prepare_config(config: ml_collections.ConfigDict):
    """Resolve stage chaining inputs that change the network (codebook sizes) and validate.

    Returns ``(config, init)`` where ``init`` holds the host arrays to start from.
    """
    config = ml_collections.ConfigDict(config.to_dict())
    config_lib.validate(config)            # before reading any file the config names
    init: dict[str, Any] = {}
    t = config.train
    if config.stage == 2 and not t.stage1_checkpoints and not t.get("allow_random_codebooks", False):
        raise ValueError("train.stage1_checkpoints is empty: stage II would mix random, frozen "
                         "codebooks; list the stage I exports (--config.train.stage1_checkpoints="
                         "'(\"runs/s1_<class>/export/generator\", ...)') or set "
                         "train.allow_random_codebooks=True for an experiment")
    if config.stage == 2 and t.stage1_checkpoints:
        books = _stage1_codebooks(t.stage1_checkpoints)
        config.model.codebooks = tuple(tuple(b.shape) for b in books)
        init["codebooks"] = books
        if t.get("stage2_init_from_stage1", False):
            init["stage1_params"] = [_load_export(p, "train.stage1_checkpoints")[1]["params"]
                                     for p in t.stage1_checkpoints]
    if config.stage == 3:
        cfg_hq, teacher, _ = _load_export(t.stage2_checkpoint, "train.stage2_checkpoint")
        if cfg_hq.get("lq_stage", False) or cfg_hq.get("single_codebook", False):
            raise ValueError(f"{t.stage2_checkpoint}: expected a stage II (HQ, K codebooks) network")
        config.model.codebooks = tuple(tuple(c) for c in cfg_hq.codebooks)
        init["teacher_cfg"], init["teacher"] = cfg_hq, {"params": teacher["params"]}
        d_path = t.stage2_disc_checkpoint or os.path.join(os.path.dirname(
            paths.absolute(t.stage2_checkpoint).rstrip("/")), "discriminator")
        if paths.exists(os.path.join(d_path, checkpointing.MODEL_JSON)):
            _, init["disc"], _ = _load_export(d_path, "train.stage2_disc_checkpoint")
        elif t.stage2_disc_checkpoint:
            raise FileNotFoundError(f"train.stage2_disc_checkpoint: {d_path} has no model.json")
    config_lib.validate(config)
    if config.stage == 3:
        _check_stage2_fits(config, init["teacher"], init.get("disc"), t.stage2_checkpoint, d_path)
    return config, init


def build_networks(config, init: dict):
    """``(nets, consts)`` of ``config``'s train step: G, D, the loss networks and optimisers,
    and the constant weights the step takes as an argument (LPIPS-vgg, the stage I VGG19,
    the stage III teacher from ``init["teacher_cfg"]`` / ``init["teacher"]``, see
    :func:`prepare_config`)."""
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
    gt_shape, lq_shape = _input_shapes(config)
    rng_g, rng_d = jax.random.split(jax.random.key(int(config.seed)))

    def fresh_state():
        g_in = jnp.zeros(lq_shape if int(config.stage) == 3 else gt_shape, jnp.float32)
        g_params = nets.generator.init(rng_g, g_in)["params"]
        d_vars = nets.discriminator.init(rng_d, jnp.zeros(gt_shape, jnp.float32))
        return steps_lib.init_state(nets, g_params, d_vars)
    return fresh_state


def _input_shapes(config):
    s, sf = config.data.crop_size, config.model.scale_factor
    lq = s // sf if config.data.task == "sr" else s
    return (1, s, s, 3), (1, lq, lq, 3)


# ---- validation ------------------------------------------------------------------------------

def validation_set(config) -> list[dict]:
    """Frozen validation pairs: centre crops of ``eval.path`` images, degraded with fixed seeds
    (the test-set tool's generator), so every evaluation sees the same inputs."""
    files = sources.list_images(config.eval.path)[: int(config.eval.num_images)]
    if not files:
        raise ValueError(f"eval.path {config.eval.path!r} has no images")
    s = int(config.data.crop_size)
    task = {"sr": f"sr_x{config.data.scale}", "inpaint": "inpaint"}.get(config.data.task)
    pairs = []
    for f in files:
        img = data_io.read_image(f)
        h, w = img.shape[:2]
        if min(h, w) < s:
            scale = s / min(h, w)
            import cv2
            img = cv2.resize(img, (max(s, round(w * scale)), max(s, round(h * scale))),
                             interpolation=cv2.INTER_CUBIC).clip(0, 1)
            h, w = img.shape[:2]
        gt = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        rel = os.path.relpath(f, config.eval.path)
        if task is None:
            pairs.append({"name": rel, "gt": gt, "lq": gt})
        else:
            p = make_testset.make_pair(gt, task, make_testset.image_rng(config.eval.seed, rel))
            pairs.append({"name": rel, "gt": p["gt"], "lq": p["lq"]})
    return pairs


def evaluate(apply_fn, g_params, pairs, lpips_alex, config) -> dict:
    """Mean PSNR / SSIM (Y, border crop) and LPIPS-alex over the validation pairs."""
    scores = {"psnr": [], "ssim": [], "lpips_alex": []}
    for p in pairs:
        out = np.asarray(apply_fn(g_params, p["lq"][None]))[0].clip(0, 1)
        kw = dict(crop_border=int(config.eval.crop_border), y_space=config.eval.y_space)
        scores["psnr"].append(metrics_lib.psnr(pred=out, gt=p["gt"], **kw))
        scores["ssim"].append(metrics_lib.ssim(pred=out, gt=p["gt"], **kw))
        module, variables = lpips_alex
        scores["lpips_alex"].append(float(perceptual.lpips_distance(
            module, variables, jnp.asarray(out[None]), jnp.asarray(p["gt"][None]))[0]))
    return {f"val/{k}": float(np.mean(v)) for k, v in scores.items()}


# ---- pictures ----------------------------------------------------------------------------------

def panels(batch: dict, out: np.ndarray, n: int = 4) -> np.ndarray:
    """Labelled LQ | output | GT rows for the first ``n`` examples (:mod:`adacode_jax.visualize`)."""
    return visualize.training_panels(batch["gt"], out, batch.get("lq"), n=n)


def weight_map_pictures(batch: dict, maps: np.ndarray, n: int = 2) -> np.ndarray:
    """The CLI's weight-map figure for the first ``n`` examples, one colour scale for all."""
    return visualize.training_weight_maps(batch.get("lq", batch["gt"]), maps, n=n)


# ---- the run -----------------------------------------------------------------------------------

def _usage_stats(counts: np.ndarray, sizes) -> dict:
    """Per codebook: distinct codes used and perplexity over the window's histogram."""
    out = {}
    for k, n_e in enumerate(sizes):
        c = counts[k, :n_e].astype(np.float64)
        p = c / max(c.sum(), 1.0)
        ent = -np.sum(p[p > 0] * np.log(p[p > 0]))
        out[f"codebook/{k}/unique"] = float((c > 0).sum())
        out[f"codebook/{k}/perplexity"] = float(np.exp(ent))
    return out


class JsonlWriter:
    """Appends ``{"step": s, "wall_time": unix seconds, **scalars}`` lines to
    ``workdir/metrics.jsonl`` (process 0), so scripts can read a run's numbers and timing
    without TensorBoard (:mod:`adacode_jax.report`)."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def write(self, step: int, scalars: dict) -> None:
        if self.enabled:
            import json

            with paths.open_file(self.path, "a") as f:
                f.write(json.dumps({"step": int(step), "wall_time": round(time.time(), 3),
                                    **{k: float(v) for k, v in scalars.items()}}) + "\n")


def _check_finite(step: int, metrics: dict) -> None:
    bad = [k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"non-finite loss at step {step}: "
                                 + ", ".join(f"{k}={metrics[k]}" for k in bad)
                                 + "; lower the learning rate or check the data")


# ---- one run per workdir, one config per workdir -------------------------------------------

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir's lock; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        return True
    return True


def acquire_lock(workdir: str) -> str:
    """Create ``workdir/run.lock`` (pid, host, start time) or raise :class:`WorkdirBusyError`.

    A lock left by a dead process of this host is taken over (logged); one of another host
    cannot be checked from here and is refused. Returns the lock's path.
    """
    import json
    import socket

    paths.makedirs(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(3):
        if paths.is_url(path):       # no atomic create on object stores: best effort
            if not paths.exists(path):
                with paths.open_file(path, "w") as f:
                    json.dump(me, f)
                return path
        else:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                return path
        try:
            with paths.open_file(path) as f:
                holder = json.load(f)
            pid, host = int(holder["pid"]), str(holder["host"])
        except (OSError, ValueError, KeyError, TypeError):
            raise WorkdirBusyError(f"{path} exists but is unreadable: another run may use "
                                   f"{workdir}; delete the file if none does") from None
        if host == me["host"] and not _pid_alive(pid):
            logging.warning("%s: taking over the lock of process %d on %s (started %s), which "
                            "is no longer running", path, pid, host, holder.get("started", "?"))
            _remove(path)
            continue
        raise WorkdirBusyError(
            f"{workdir} is in use by process {pid} on {host} (started "
            f"{holder.get('started', '?')}, lock {path}); wait for that run, use another "
            "workdir, or delete the lock if that run is dead")
    raise WorkdirBusyError(f"{path}: could not take the lock; another run keeps creating it")


def _remove(path: str) -> None:
    if paths.is_url(path):
        import tensorflow as tf

        tf.io.gfile.remove(path)
    elif os.path.exists(path):
        os.remove(path)


def release_lock(path: str) -> None:
    try:
        _remove(path)
    except OSError as e:
        logging.warning("could not remove the lock %s: %s", path, e)


_LOCK_ROUNDS = iter(range(1 << 30))


def _all_processes_agree(name: str, error: BaseException | None) -> None:
    """Process 0's outcome of ``name`` for every process: the others raise its error too
    (instead of waiting in the first collective for a process that has stopped)."""
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    from orbax.checkpoint import multihost

    client = multihost.get_jax_distributed_client()
    key = f"adacode:{name}:{next(_LOCK_ROUNDS)}"
    if jax.process_index() == 0:
        client.key_value_set(key, "" if error is None else str(error))
        if error is not None:
            raise error
    else:
        message = client.blocking_key_value_get(key, 3600 * 1000)
        if message:
            raise WorkdirBusyError(f"process 0: {message}")


# What a resumed run may not change: the networks, the data (except how it is loaded), the
# seed and the stage, and what decides the optimiser state's layout. Everything else (num_steps,
# cadences, keep_checkpoints, profile, async_checkpoints, eval.*, mesh.*, learning rates ...) may
# change; such changes are logged.
RESUME_FIXED_PREFIXES = ("model.", "disc.", "data.")
RESUME_FIXED = ("seed", "stage", "train.frozen", "train.schedule")
RESUME_FREE = ("data.worker_count", "data.worker_buffer_size", "data.read_threads",
               "data.read_buffer_size")


def _short(v) -> str:
    import json

    return json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else repr(v)


def check_resume_config(saved: dict, config, workdir: str, step: int) -> None:
    """Refuse to resume ``workdir`` with a config whose fixed fields differ from ``saved``.

    Fields absent from one side (a config written by another version) are not compared.
    """
    import json

    old = traverse_util.flatten_dict(saved, sep=".")
    new = traverse_util.flatten_dict(json.loads(config.to_json()), sep=".")
    fixed, free = [], []
    for k in sorted(set(old) & set(new)):
        if old[k] == new[k]:
            continue
        change = f"{k}: {_short(old[k])} → {_short(new[k])}"
        if k not in RESUME_FREE and (k in RESUME_FIXED or k.startswith(RESUME_FIXED_PREFIXES)):
            fixed.append(change)
        else:
            free.append(change)
    if fixed:
        raise ValueError(f"{workdir} belongs to another config: its checkpoint at step {step} "
                         f"differs in {'; '.join(fixed)}; resume with the saved values or "
                         "start a new workdir")
    if free:
        logging.info("resuming %s with changed settings: %s", workdir, "; ".join(free))


# ---- resuming from the newest intact checkpoint ---------------------------------------------

class DamagedCheckpointsError(errors.UserError):
    """Checkpoints exist but none restores whole and finite."""


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def non_finite_leaf(state, out_sharding) -> str | None:
    """The ``/``-joined name of the first floating leaf of ``state`` holding NaN or Inf, or
    None. One jitted reduction over the (sharded) arrays: every process takes part."""
    leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return None
    finite = jax.jit(lambda xs: jnp.stack([jnp.isfinite(x).all() for x in xs]),
                     out_shardings=out_sharding)([x for _, x in leaves])
    finite = np.asarray(jax.device_get(finite))
    return None if finite.all() else _leaf_name(leaves[int(np.argmin(finite))][0])


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def _first_line(e: BaseException, n: int = 200) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: " + (text if len(text) <= n else text[:n] + "...")


def restore_latest_intact(ckpts, target, data_it, out_sharding):
    """``(step, state)`` of the newest checkpoint that restores whole (every file there and
    readable) and finite; ``(None, None)`` if the run has no checkpoint.

    Each damaged newer one is reported by path (a warning) and moved to
    ``checkpoints_damaged/<step>`` so the resumed run can save that step again. If checkpoints
    exist but none is intact, raises :class:`DamagedCheckpointsError` (never a silent restart
    from step 0).
    """
    steps = ckpts.all_steps()
    damaged = []
    for step in reversed(steps):
        problem = None
        try:
            state = ckpts.restore(step, target, data_it)
        except Exception as e:  # noqa: BLE001 - any failure to read it makes it damaged
            problem = f"it does not restore ({_first_line(e)})"
        else:
            bad = non_finite_leaf(state, out_sharding)
            if bad is not None:
                problem = f"{bad} holds NaN/Inf values"
        if _any_process(problem is not None):
            damaged.append((step, problem or "damaged on another process"))
            continue
        for s, why in damaged:
            moved = ckpts.set_aside(s)
            logging.warning("%s: damaged checkpoint: %s; moved to %s; resuming from step %d "
                            "instead", ckpts.step_dir(s), why, moved, step)
        return step, state
    if not steps:
        return None, None
    listing = "; ".join(f"step {s}: {why}" for s, why in damaged)
    raise DamagedCheckpointsError(
        f"{ckpts.directory}: none of the {len(steps)} checkpoints is intact ({listing})",
        f"restore the folder from a backup, or move it away (e.g. mv {ckpts.directory} "
        f"{ckpts.directory}.bad) to train from step 0")


# ---- one entry per step in the logs, after a resume -------------------------------------------

def drop_logs_after(workdir: str, step: int) -> dict[str, int]:
    """Remove what a run logged beyond ``step``, the step it resumes from (everything if 0):
    ``metrics.jsonl`` lines and TensorBoard summary events (event files are rewritten without
    them). Process 0. Returns the number of entries dropped per file kind."""
    import json

    import tensorflow as tf

    dropped = {"metrics.jsonl": 0, "tensorboard": 0}
    path = os.path.join(workdir, "metrics.jsonl")
    if paths.exists(path):
        with paths.open_file(path) as f:
            lines = f.read().splitlines()
        kept = []
        for line in lines:
            try:
                keep = step > 0 and int(json.loads(line)["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False                   # a line cut short by a kill
            if keep:
                kept.append(line)
        if len(kept) != len(lines):
            dropped["metrics.jsonl"] = len(lines) - len(kept)
            tmp = path + ".tmp"
            with paths.open_file(tmp, "w") as f:
                f.write("".join(line + "\n" for line in kept))
            tf.io.gfile.rename(tmp, path, overwrite=True)
    tb = os.path.join(workdir, "tensorboard")
    if not tf.io.gfile.isdir(tb):
        return dropped
    for name in sorted(tf.io.gfile.listdir(tb)):
        if not name.startswith("events.out.tfevents"):
            continue
        events_path, events, n_drop = os.path.join(tb, name), [], 0
        try:
            for record in tf.data.TFRecordDataset(events_path):
                raw = record.numpy()
                event = tf.compat.v1.Event.FromString(raw)
                if event.HasField("summary") and (step == 0 or event.step > step):
                    n_drop += 1
                else:
                    events.append(raw)
        except tf.errors.DataLossError:        # the last record cut short by a kill
            n_drop += 1
        if not n_drop:
            continue
        dropped["tensorboard"] += n_drop
        if step == 0 or all(not tf.compat.v1.Event.FromString(r).HasField("summary")
                            for r in events):
            tf.io.gfile.remove(events_path)
            continue
        tmp = events_path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as w:
            for raw in events:
                w.write(raw)
        tf.io.gfile.rename(tmp, events_path, overwrite=True)
    if any(dropped.values()):
        logging.info("resuming at step %d: dropped the logged entries of later steps (%s)", step,
                     ", ".join(f"{n} from {k}" for k, n in dropped.items() if n))
    return dropped


# ---- stopping on SIGINT / SIGTERM -----------------------------------------------------------

class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (Slurm, Kubernetes, Cloud TPU preemption) ask the run to
    stop at the next step boundary, where it saves a checkpoint and exports; a later launch
    resumes exactly. Further signals while it stops only print a note (the save is not cut).

    With several processes, they agree every ``poll_every`` steps (a barrier of the JAX
    coordination service): all stop at the same step if any was signalled.
    """

    def __init__(self, poll_every: int = 10):
        self.poll_every = int(poll_every)
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}
        self._round = next(_LOCK_ROUNDS)

    def _handle(self, signum, frame) -> None:
        del frame
        self.count += 1
        if self.signum is None:
            self.signum = signum
            msg = (f"\n{signal.Signals(signum).name}: stopping at the next step boundary "
                   "(saving a checkpoint first)\n")
        else:
            msg = (f"\n{signal.Signals(signum).name}: already stopping; the checkpoint is being "
                   f"saved (kill -9 {os.getpid()} aborts, losing the steps since the last one)\n")
        os.write(2, msg.encode())

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request"

    def agreed(self, step: int) -> bool:
        """Whether to stop after ``step``: this process's signal (one process), or any
        process's at the agreed steps (several)."""
        if jax.process_count() == 1:
            return self.signum is not None
        if step % self.poll_every:
            return False
        from orbax.checkpoint import multihost

        client = multihost.get_jax_distributed_client()
        prefix = f"adacode:stop:{self._round}:{step}/"
        if self.signum is not None:
            client.key_value_set(f"{prefix}{jax.process_index()}", str(self.signum))
        client.wait_at_barrier(f"adacode_stop_{self._round}_{step}", 10 * 60 * 1000)
        votes = client.key_value_dir_get(prefix)
        if votes and self.signum is None:
            self.signum = int(votes[0][1])
        return bool(votes)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run (or resume) one stage. Returns the last logged metrics (host floats).

    Refuses before compiling anything: an invalid config, a mesh larger than the devices, a
    workdir that another live run holds (``workdir/run.lock``, taken by process 0), and a
    resume with a config whose networks, data, seed or stage differ from the checkpoint's.
    """
    config, init = prepare_config(config)
    workdir = paths.absolute(workdir)
    n_dev, have = int(config.mesh.num_devices), len(jax.devices())
    if n_dev > have:
        raise ValueError(f"invalid config: mesh.num_devices={n_dev} but only {have} "
                         f"{jax.default_backend()} device(s) are available; lower "
                         "mesh.num_devices or use -1 (all)")
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = acquire_lock(workdir)
        except WorkdirBusyError as e:
            error = e
    _all_processes_agree("workdir_lock", error)
    try:
        return _run(config, init, workdir)
    finally:
        if lock is not None:
            release_lock(lock)


def _run(config, init: dict, workdir: str) -> dict:
    log_file = console.log_to_file(workdir) if jax.process_index() == 0 else None
    try:
        return _train(config, init, workdir)
    finally:
        console.close_log_file(log_file)


def _train(config, init: dict, workdir: str) -> dict:
    is_main = jax.process_index() == 0
    t = config.train
    stage = int(config.stage)

    n_dev = int(config.mesh.num_devices)
    mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:n_dev] if n_dev > 0 else None)
    if config.data.batch_size % mesh.size:
        raise ValueError(f"data.batch_size={config.data.batch_size} does not split over the "
                         f"{mesh.size} devices of the mesh; use a multiple of {mesh.size} or set "
                         f"mesh.num_devices")
    logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
                 jax.process_count(), extra=console.FILE_ONLY)     # the run header says it

    nets, consts = build_networks(config, init)
    generator = nets.generator
    lpips_alex = perceptual.load_lpips("alex")

    # state, created directly in its sharding
    fresh_state = init_fn(config, nets)
    abstract = jax.eval_shape(fresh_state)
    state_sh = sharding_lib.tree_shardings(abstract, mesh, int(config.mesh.fsdp_min_size))
    rep = sharding_lib.replicated(mesh)
    consts = sharding_lib.from_host(consts, rep)
    lpips_alex = (lpips_alex[0], sharding_lib.from_host(lpips_alex[1], rep))

    ckpts = checkpointing.RunCheckpoints(os.path.join(workdir, "checkpoints"),
                                         keep=int(t.keep_checkpoints),
                                         async_save=bool(t.async_checkpoints))
    data_it = pipeline.make_iterator(config.data)
    try:
        latest = ckpts.latest_step()
        saved = ckpts.saved_config(latest) if latest is not None else None
        if saved is not None:
            check_resume_config(saved, config, workdir, latest)
        target = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                              abstract, state_sh)
        start, state = restore_latest_intact(ckpts, target, data_it, rep)
    except BaseException:
        ckpts.close()
        data_it.close()
        raise
    if start is not None:
        logging.info("resuming from %s step %d", ckpts.directory, start)
    else:
        start = 0
        state = jax.jit(fresh_state, out_shardings=state_sh)()
        state = _apply_init(state, init, nets, stage, state_sh)
    if is_main:
        # each step once in the logs: a run stopped (or killed) after its last checkpoint
        # logged steps that this one does again
        drop_logs_after(workdir, start)
    writer = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                  just_logging=not is_main)
    jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), is_main)
    # "global" statistics: a collective over the (possibly multi-host, FSDP) arrays, so every
    # process takes part; process 0 writes the tables to the log file only
    for what, params in (("generator", state.g_params), ("discriminator", state.d_params)):
        table = parameter_overview.get_parameter_overview(params, include_stats="global")
        if is_main:
            logging.info("%s parameters\n%s", what, table, extra=console.FILE_ONLY)
    progress = console.Progress(int(t.num_steps), console.KEY_LOSSES.get(stage, ()),
                                enabled=is_main)
    if is_main:
        console.attach(progress)
        header = console.run_header(
            label=console.config_label() or f"stage {stage} config",
            stage=stage, kind=str(config.model.get("kind", "?")),
            devices=console.describe_devices(mesh.devices.flat), mesh_shape=dict(mesh.shape),
            processes=jax.process_count(),
            counts=console.parameter_counts(state.g_params, state.d_params, tuple(t.frozen)),
            workdir=workdir, start=start, total=int(t.num_steps))
        logging.info("%s", header, extra=console.FILE_ONLY)
        progress.stream.write(header + "\n")
        progress.stream.flush()
        if start == 0:
            writer.write_hparams({k: v for k, v in traverse_util.flatten_dict(
                config.to_dict(), sep=".").items() if isinstance(v, (int, float, str, bool))})

    train_step = jit_train_step(nets, t, stage, mesh, state_sh)
    apply_fn = jax.jit(lambda p, x: generator.apply({"params": p}, x, method="restore_padded")[0],
                       out_shardings=rep)
    pairs = validation_set(config) if t.eval_every else []
    sizes = [int(cb[0]) for cb in config.model.codebooks]

    report = periodic_actions.ReportProgress(num_train_steps=int(t.num_steps), writer=writer)
    hooks = [report]
    if t.profile and is_main:
        hooks.append(periodic_actions.Profile(num_profile_steps=5, profile_duration_ms=None,
                                              logdir=workdir))
    window, counts, last, latest_scalars = [], None, {}, {}
    restart_every = int(t.codebook_restart_every)
    restart_counts = None                 # code histograms since the last restart
    n_restarted = 0                       # codes re-placed since the last log
    restart_fn = jax.jit(functools.partial(steps_lib.restart_dead_codes, nets=nets),
                         out_shardings=(state_sh, rep), donate_argnums=(0,))
    best = _read_best(workdir)
    if t.eval_every and t.eval_at_start and start == 0:
        scores = evaluate(apply_fn, state.g_params, pairs, lpips_alex, config)
        writer.write_scalars(0, scores)
        jsonl.write(0, scores)
    step = start
    compiled_step = None
    # Metrics are fetched one step late: the host reads step s's scalars after step s + 1 is
    # queued, so the device never waits for the host's data loading and logging in between.
    # Steps that log, evaluate or checkpoint fetch their own at once (no NaN state is saved).
    pending = []
    state_bytes = checkpointing.tree_bytes(abstract)
    in_flight = None                      # the step of an asynchronous save not yet finished

    def fetch_pending():
        nonlocal counts, restart_counts, latest_scalars
        for s_done, m_dev, usage_dev, n_skipped in pending:
            m_host = jax.device_get(m_dev)
            _check_finite(s_done, m_host)
            m_host["data/skipped_files"] = n_skipped
            window.append(m_host)
            latest_scalars = m_host
            usage = np.asarray(jax.device_get(usage_dev))
            counts = usage if counts is None else counts + usage
            if restart_every:
                restart_counts = usage if restart_counts is None else restart_counts + usage
        pending.clear()

    def checkpoint_disk_full(s: int):
        before = [p for p in ckpts.all_steps() if p < s]
        resume = f"step {before[-1]}" if before else "step 0"
        return checkpointing.disk_full_reported(
            ckpts.step_dir(s), f"the checkpoint of step {s}", state_bytes,
            f"free disk space or move {workdir} to a larger disk, then run the same command "
            f"again: it resumes from {resume}", cleanup=lambda: ckpts.remove_partial(s),
            held=orbax_errors)

    def finish_saves():
        nonlocal in_flight
        if in_flight is not None:
            s, in_flight = in_flight, None
            with checkpoint_disk_full(s):
                ckpts.wait()

    stop = StopRequest()
    # asynchronous saves fail in Orbax's threads, which log the error with tracebacks: held
    # until it is known whether the failure is a full disk (then reported once)
    orbax_errors = checkpointing.HeldOrbaxErrors()
    stopped = False
    ok = False
    try:
        with stop, orbax_errors:
            while step < int(t.num_steps):
                host = next(data_it)
                skipped = int(np.sum(host.pop("skipped", 0)))
                batch = pipeline.make_global_batch(host, mesh, sharding_lib.BATCH_AXES)
                if compiled_step is None:
                    # Compile first, then start together: the step's collectives must not wait
                    # for a process that is still compiling (see sharding_lib.barrier).
                    compiled_step = train_step.lower(state, batch, consts).compile()
                    sharding_lib.barrier("first_train_step")
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, m, outputs = compiled_step(state, batch, consts)
                step += 1
                fetch_pending()                      # the previous step's, while this one runs
                pending.append((step, m, outputs["usage"], skipped))
                last_step = step == int(t.num_steps)
                stopped = not last_step and stop.agreed(step)
                log_now = step % int(t.log_every) == 0 or last_step
                eval_now = bool(t.eval_every) and (step % int(t.eval_every) == 0 or last_step)
                save_now = step % int(t.checkpoint_every) == 0 or last_step or stopped
                restart_now = bool(restart_every) and step % restart_every == 0
                if log_now or eval_now or save_now or restart_now:
                    fetch_pending()
                if restart_now:
                    # after step s, before s + 1 (and before a checkpoint at s): a resumed run
                    # starts from the same codes with an empty histogram, as this one continues
                    state, restarted = restart_fn(
                        state, usage=restart_counts, feat=outputs["feat"],
                        key=jax.random.fold_in(jax.random.key(int(config.seed) + 1), step))
                    restart_counts = None
                    n_restarted += int(np.sum(jax.device_get(restarted)))
                for h in hooks:
                    h(step)
                if log_now:
                    last = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    last["data/skipped_files"] = float(sum(w["data/skipped_files"] for w in window))
                    last.update(_usage_stats(counts, sizes))
                    if restart_every:
                        last["codebook/restarted"] = float(n_restarted)
                        n_restarted = 0
                    last["lr/g"] = float(steps_lib.learning_rate(t.lr_g, t)(step))
                    last["lr/d"] = float(steps_lib.learning_rate(t.lr_d, t)(step))
                    if "weight_maps" in outputs:
                        wm = sharding_lib.to_host(outputs["weight_maps"])
                        for k in range(wm.shape[-1]):
                            last[f"weights/{k}/mean"] = float(wm[..., k].mean())
                            last[f"weights/{k}/std"] = float(wm[..., k].std())
                    writer.write_scalars(step, last)
                    jsonl.write(step, last)
                    window, counts = [], None
                if t.image_every and step % int(t.image_every) == 0:
                    # a collective on multi-host meshes: every process fetches, process 0 writes
                    pics = sharding_lib.to_host({k: outputs[k] for k in ("out", "weight_maps")
                                                 if k in outputs})
                    images = {"lq_out_gt": panels(host, pics["out"])}
                    if "weight_maps" in pics:
                        images["weight_maps"] = weight_map_pictures(host, pics["weight_maps"])
                    if is_main:
                        writer.write_images(step, images)
                if eval_now:
                    scores = evaluate(apply_fn, state.g_params, pairs, lpips_alex, config)
                    writer.write_scalars(step, scores)
                    jsonl.write(step, scores)
                    last.update(scores)
                    if best is None or scores["val/lpips_alex"] < best:
                        best = scores["val/lpips_alex"]
                        best_dir = os.path.join(workdir, "best", "generator")
                        with checkpointing.disk_full_reported(best_dir, "the best generator so far",
                                              checkpointing.tree_bytes(state.g_params),
                                              "free disk space, then run the same command again",
                                              cleanup=lambda: checkpointing.remove_temporary(best_dir),
                                              held=orbax_errors):
                            checkpointing.save_inference(
                                best_dir, config.model, {"params": state.g_params},
                                extra={"step": step, **scores})
                        logging.info("step %d: new best validation LPIPS %.4f", step, best)
                progress.update(step, latest_scalars or last)
                if save_now:
                    writer.flush()          # the logs up to a checkpoint survive a kill
                    finish_saves()
                    with checkpoint_disk_full(step):
                        ckpts.save(step, state, data_it, config, force=True)
                    in_flight = step
                    if stopped:
                        break
            progress.finish()
            finish_saves()
            with checkpointing.disk_full_reported(
                    os.path.join(workdir, "export"), "the exported weights",
                    checkpointing.tree_bytes((state.g_params, state.d_params, state.d_spectral)),
                    f"free disk space, then run the same command again: it resumes from the "
                    f"checkpoint of step {step} and exports",
                    cleanup=lambda: checkpointing.remove_temporary(os.path.join(workdir, "export")),
                    held=orbax_errors):
                export(workdir, config, state)
        ok = True
    finally:
        progress.finish()
        console.attach(None)
        if ok:
            ckpts.close()
        else:
            _close_quietly(ckpts)
        writer.flush()
        data_it.close()
    if stopped:
        logging.warning("%s: stopped at step %d of %d; saved the checkpoint %s and the export; "
                        "resume with the same command (it continues from step %d)", stop.name,
                        step, int(t.num_steps), ckpts.step_dir(step), step)
        last = {**last, "train/stopped_at_step": float(step)}
    return last


def _close_quietly(ckpts) -> None:
    """Close the checkpoint manager while another error propagates: a failed background save
    would only raise (and log) that error again."""
    import logging as std_logging

    absl_logger = std_logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(std_logging.CRITICAL)
    try:
        ckpts.close()
    except Exception as e:  # noqa: BLE001 - the error being raised says what went wrong
        logging.info("closing the checkpoints after an error: %s", _first_line(e))
    finally:
        absl_logger.setLevel(level)


def jit_train_step(nets, train_cfg, stage: int, mesh, state_sh):
    """The train step as training runs it (and :mod:`adacode_jax.comm_report` inspects it):
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


def _apply_init(state, init: dict, nets, stage: int, state_sh):
    """Chain stages: codebooks from stage I (stage II); G and D from stage II (stage III)."""
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
    trainable, _ = steps_lib.split_params(g, nets.frozen)
    new = state.replace(g_params=g, d_params=d_params, d_spectral=d_spectral,
                        g_opt=nets.g_tx.init(trainable), d_opt=nets.d_tx.init(d_params))
    return sharding_lib.from_host(new, state_sh)


def _read_best(workdir: str):
    import json

    meta = os.path.join(workdir, "best", "generator", checkpointing.MODEL_JSON)
    if paths.exists(meta):
        with paths.open_file(meta) as f:
            return json.load(f).get("val/lpips_alex")
    return None


def export(workdir: str, config, state) -> str:
    """Inference weights of G and D under ``workdir/export``: the input of the next stage and
    of the restoration tools."""
    out = os.path.join(workdir, "export")
    step = int(jax.device_get(state.step))
    extra = {"stage": int(config.stage), "step": step}
    # how the restorer runs this network by default (restore.Restorer.from_checkpoint)
    hints = {"tile": int(config.train.get("inference_tile", 0)),
             "overlap": int(config.train.get("inference_overlap", 0)),
             "low_freq_sigma": float(config.train.get("inference_low_freq_sigma", 0.0))}
    if any(hints.values()):
        extra["inference"] = hints
    checkpointing.save_inference(os.path.join(out, "generator"), config.model,
                                 {"params": state.g_params}, extra=extra)
    checkpointing.save_inference(os.path.join(out, "discriminator"), config.disc,
                                 {"params": state.d_params, "spectral": state.d_spectral},
                                 extra={"stage": int(config.stage), "step": step})
    logging.info("exported inference weights to %s", out)
    return out
