"""``train_and_evaluate(config, workdir)``: one training stage, from initialisation (or the
latest checkpoint in ``workdir``) to the exported inference weights.

Data path: Grain host batches -> global arrays over the mesh -> jitted G/D step -> metrics,
pictures, validation, Orbax checkpoints. Side effects (files, TensorBoard, logs) only on
process 0, except checkpoints, which every host writes its part of.

The loop (:func:`_train`) reads as its named steps, the methods of :class:`_Run`; what they
call lives by concern: :mod:`~adacode_jax.training.stages` (stage chaining),
:mod:`~adacode_jax.training.networks` (networks, state, jitted step),
:mod:`~adacode_jax.training.checkpoints` (resume, saves, best, exports),
:mod:`~adacode_jax.training.logs` (metrics and pictures),
:mod:`~adacode_jax.training.validation`, :mod:`~adacode_jax.training.workdir` (lock, resume
checks, log truncation) and :mod:`~adacode_jax.training.preemption` (signals).

``workdir`` layout::

    checkpoints/<step>/{state,data,config}   Orbax (auto-resume from the latest)
    tensorboard/                             TensorBoard events (summaries.Writer)
    export/{generator,discriminator}/        inference weights at the end (checkpointing.save_inference)
    best/generator/                          the best validation LPIPS so far (as the reference)
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

# Where TensorFlow is installed (TFDS sources import it): no C++ start-up lines (oneDNN, CUDA
# probing) on the console. Training itself needs no TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from clu import parameter_overview  # noqa: E402  (TensorFlow-free, unlike clu's writers)
from flax import traverse_util  # noqa: E402

from adacode_jax import paths  # noqa: E402
from adacode_jax.data import pipeline  # noqa: E402
from adacode_jax.models import checkpointing, perceptual  # noqa: E402
from adacode_jax.training import checkpoints as checkpoints_lib  # noqa: E402
from adacode_jax.training import console  # noqa: E402
from adacode_jax.training import logs as logs_lib  # noqa: E402
from adacode_jax.training import networks, preemption, stages, validation  # noqa: E402
from adacode_jax.training import sharding as sharding_lib  # noqa: E402
from adacode_jax.training import steps as steps_lib  # noqa: E402
from adacode_jax.training import summaries  # noqa: E402
from adacode_jax.training import workdir as workdir_lib  # noqa: E402


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run (or resume) one stage. Returns the last logged metrics (host floats).

    Refuses before compiling anything: an invalid config, a mesh larger than the devices, a
    workdir that another live run holds (``workdir/run.lock``, taken by process 0), and a
    resume with a config whose networks, data, seed or stage differ from the checkpoint's.
    """
    config, init = stages.prepare_config(config)
    workdir = paths.absolute(workdir)
    n_dev, have = int(config.mesh.num_devices), len(jax.devices())
    if n_dev > have:
        raise ValueError(f"invalid config: mesh.num_devices={n_dev} but only {have} "
                         f"{jax.default_backend()} device(s) are available; lower "
                         "mesh.num_devices or use -1 (all)")
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = workdir_lib.acquire_lock(workdir)
        except workdir_lib.WorkdirBusyError as e:
            error = e
    workdir_lib.all_processes_agree("workdir_lock", error)
    try:
        return _run(config, init, workdir)
    finally:
        if lock is not None:
            workdir_lib.release_lock(lock)


def _run(config, init: dict, workdir: str) -> dict:
    log_file = console.log_to_file(workdir) if jax.process_index() == 0 else None
    try:
        return _train(config, init, workdir)
    finally:
        console.close_log_file(log_file)


def _train(config, init: dict, workdir: str) -> dict:
    """The loop: set up (or resume), then per step train, log, validate and checkpoint; at
    the end (or on a stop request) save and export."""
    run = _Run(config, init, workdir)            # mesh, networks, shardings
    run.restore_or_init(init)
    run.open_logs()
    run.prepare_steps()
    ok = False
    try:
        with run.stop, run.saver.held_errors:
            while run.step < run.num_steps:
                host, outputs = run.train_step()
                due = run.due()
                if due.log or due.validate or due.save or due.restart:
                    run.window.fetch()
                if due.restart:
                    run.restart_dead_codes(outputs)
                for hook in run.hooks:
                    hook(run.step)
                if due.log:
                    run.log(outputs)
                if due.pictures:
                    run.write_pictures(host, outputs)
                if due.validate:
                    run.validate()
                run.show_progress()
                if due.save:
                    run.save_checkpoint()
                    if run.stopped:
                        break
            run.finish()
        ok = True
    finally:
        run.close(ok)
    return run.result()


class Due(NamedTuple):
    """What the loop does after a step besides training."""
    log: bool
    validate: bool
    save: bool
    restart: bool
    pictures: bool


def due_at(step: int, train_cfg, stopped: bool) -> Due:
    """The cadences of ``train_cfg`` after ``step`` (the last step logs, validates and saves;
    a stop request saves)."""
    t = train_cfg
    last_step = step == int(t.num_steps)
    restart_every = int(t.codebook_restart_every)
    return Due(log=step % int(t.log_every) == 0 or last_step,
               validate=bool(t.eval_every) and (step % int(t.eval_every) == 0 or last_step),
               save=step % int(t.checkpoint_every) == 0 or last_step or stopped,
               restart=bool(restart_every) and step % restart_every == 0,
               pictures=bool(t.image_every) and step % int(t.image_every) == 0)


def _make_mesh(config):
    n_dev = int(config.mesh.num_devices)
    mesh = sharding_lib.make_mesh(config.mesh, jax.devices()[:n_dev] if n_dev > 0 else None)
    if config.data.batch_size % mesh.size:
        raise ValueError(f"data.batch_size={config.data.batch_size} does not split over the "
                         f"{mesh.size} devices of the mesh; use a multiple of {mesh.size} or set "
                         f"mesh.num_devices")
    logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
                 jax.process_count(), extra=console.FILE_ONLY)     # the run header says it
    return mesh


class _Run:
    """One stage's run as the loop's steps share it: the networks and shardings, the state and
    its step, the data, the writers, the metrics window, the checkpoints and the best
    validation score so far."""

    def __init__(self, config, init: dict, workdir: str):
        self.config, self.workdir, self.t = config, workdir, config.train
        self.stage, self.num_steps = int(config.stage), int(config.train.num_steps)
        self.is_main = jax.process_index() == 0
        self.mesh = _make_mesh(config)
        self.nets, consts = networks.build_networks(config, init)
        lpips_alex = perceptual.load_lpips("alex")
        # state, created directly in its sharding
        self.fresh_state = networks.init_fn(config, self.nets)
        self.abstract = jax.eval_shape(self.fresh_state)
        self.state_sh = sharding_lib.tree_shardings(self.abstract, self.mesh,
                                                    int(config.mesh.fsdp_min_size))
        self.rep = sharding_lib.replicated(self.mesh)
        self.consts = sharding_lib.from_host(consts, self.rep)
        self.lpips_alex = (lpips_alex[0], sharding_lib.from_host(lpips_alex[1], self.rep))
        self.last: dict = {}                     # the scalars of the last log (and validation)
        self.stopped = False                     # a stop request was agreed after self.step

    # ---- set-up ----

    def restore_or_init(self, init: dict) -> None:
        """The newest intact checkpoint of the workdir, or fresh networks seeded from the
        previous stage's exports (``init``)."""
        t = self.t
        self.ckpts = checkpointing.RunCheckpoints(os.path.join(self.workdir, "checkpoints"),
                                                  keep=int(t.keep_checkpoints),
                                                  async_save=bool(t.async_checkpoints))
        self.data_it = pipeline.make_iterator(self.config.data)
        try:
            target = jax.tree.map(
                lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                self.abstract, self.state_sh)
            start, state = checkpoints_lib.resume(self.ckpts, self.config, self.workdir, target,
                                                  self.data_it, self.rep)
        except BaseException:
            self.ckpts.close()
            self.data_it.close()
            raise
        if start is not None:
            logging.info("resuming from %s step %d", self.ckpts.directory, start)
        else:
            start = 0
            state = jax.jit(self.fresh_state, out_shardings=self.state_sh,
                            compiler_options=networks.init_compiler_options())()
            state = stages.apply_init(state, init, self.nets, self.stage, self.state_sh)
        self.start = self.step = start
        self.state = state

    def open_logs(self) -> None:
        """Writers (TensorBoard, ``metrics.jsonl``), the parameter tables, the progress line
        and the run header."""
        if self.is_main:
            # each step once in the logs: a run stopped (or killed) after its last checkpoint
            # logged steps that this one does again
            workdir_lib.drop_logs_after(self.workdir, self.start)
        self.writer = summaries.Writer(os.path.join(self.workdir, "tensorboard"), self.is_main)
        self.jsonl = logs_lib.JsonlWriter(os.path.join(self.workdir, "metrics.jsonl"),
                                          self.is_main)
        self._log_parameters()
        self.progress = console.Progress(self.num_steps, console.KEY_LOSSES.get(self.stage, ()),
                                         enabled=self.is_main)
        if self.is_main:
            console.attach(self.progress)
            self._show_header()

    def _log_parameters(self) -> None:
        # "global" statistics: a collective over the (possibly multi-host, FSDP) arrays, so
        # every process takes part; process 0 writes the tables to the log file only
        for what, params in (("generator", self.state.g_params),
                             ("discriminator", self.state.d_params)):
            table = parameter_overview.get_parameter_overview(params, include_stats="global")
            if self.is_main:
                logging.info("%s parameters\n%s", what, table, extra=console.FILE_ONLY)

    def _show_header(self) -> None:
        mesh, state = self.mesh, self.state
        header = console.run_header(
            label=console.config_label() or f"stage {self.stage} config",
            stage=self.stage, kind=str(self.config.model.get("kind", "?")),
            devices=console.describe_devices(mesh.devices.flat), mesh_shape=dict(mesh.shape),
            processes=jax.process_count(),
            counts=console.parameter_counts(state.g_params, state.d_params, tuple(self.t.frozen)),
            workdir=self.workdir, start=self.start, total=self.num_steps)
        logging.info("%s", header, extra=console.FILE_ONLY)
        self.progress.stream.write(header + "\n")
        self.progress.stream.flush()
        if self.start == 0:
            self.writer.write_hparams({k: v for k, v in traverse_util.flatten_dict(
                self.config.to_dict(), sep=".").items() if isinstance(v, (int, float, str, bool))})

    def prepare_steps(self) -> None:
        """The jitted train step, generator and code restart, the validation pairs, the
        hooks (rate, profile), the metrics window, the stop request and the checkpoint saver;
        validates at step 0 if ``train.eval_at_start``."""
        t, generator = self.t, self.nets.generator
        self.step_fn = networks.jit_train_step(self.nets, t, self.stage, self.mesh, self.state_sh)
        self.compiled_step = None
        self.apply_fn = jax.jit(
            lambda p, x: generator.apply({"params": p}, x, method="restore_padded")[0],
            out_shardings=self.rep)
        self.pairs = validation.validation_set(self.config) if t.eval_every else []
        self.hooks = [summaries.RateHook(self.writer)]
        if t.profile and self.is_main:
            self.hooks.append(summaries.ProfileHook(self.workdir))
        self.window = logs_lib.MetricsWindow([int(cb[0]) for cb in self.config.model.codebooks],
                                             int(t.codebook_restart_every))
        self.restart_fn = jax.jit(functools.partial(steps_lib.restart_dead_codes, nets=self.nets),
                                  out_shardings=(self.state_sh, self.rep), donate_argnums=(0,))
        self.best = checkpoints_lib.read_best(self.workdir)
        if t.eval_every and t.eval_at_start and self.start == 0:
            self._write_scalars(0, self._scores())
        self.stop = preemption.StopRequest()
        self.saver = checkpoints_lib.Saver(self.ckpts, self.workdir,
                                           checkpointing.tree_bytes(self.abstract))

    # ---- the steps of the loop ----

    def train_step(self):
        """One G/D step on the next batch; queues its metrics and fetches the previous
        step's. Returns ``(host batch, step outputs)``."""
        host = next(self.data_it)
        skipped = int(np.sum(host.pop("skipped", 0)))
        batch = pipeline.make_global_batch(host, self.mesh, sharding_lib.BATCH_AXES)
        if self.compiled_step is None:
            # Compile first, then start together: the step's collectives must not wait
            # for a process that is still compiling (see sharding_lib.barrier).
            self.compiled_step = self.step_fn.lower(self.state, batch, self.consts).compile()
            sharding_lib.barrier("first_train_step")
        with jax.profiler.StepTraceAnnotation("train", step_num=self.step):
            self.state, m, outputs = self.compiled_step(self.state, batch, self.consts)
        self.step += 1
        self.window.fetch()                      # the previous step's, while this one runs
        self.window.queue(self.step, m, outputs["usage"], skipped)
        return host, outputs

    def due(self) -> Due:
        """What to do after this step; agrees on a stop request first (every process)."""
        self.stopped = self.step != self.num_steps and self.stop.agreed(self.step)
        return due_at(self.step, self.t, self.stopped)

    def restart_dead_codes(self, outputs: dict) -> None:
        # after step s, before s + 1 (and before a checkpoint at s): a resumed run
        # starts from the same codes with an empty histogram, as this one continues
        self.state, restarted = self.restart_fn(
            self.state, usage=self.window.take_restart_counts(), feat=outputs["feat"],
            key=jax.random.fold_in(jax.random.key(int(self.config.seed) + 1), self.step))
        self.window.n_restarted += int(np.sum(jax.device_get(restarted)))

    def log(self, outputs: dict) -> None:
        self.last = self.window.close(self.step, self.t, outputs)
        self._write_scalars(self.step, self.last)

    def write_pictures(self, host: dict, outputs: dict) -> None:
        # a collective on multi-host meshes: every process fetches, process 0 writes
        images = logs_lib.pictures(host, outputs)
        if self.is_main:
            self.writer.write_images(self.step, images)

    def validate(self) -> None:
        """Validation scores, logged; a new best validation LPIPS saves ``best/generator``."""
        scores = self._scores()
        self._write_scalars(self.step, scores)
        self.last.update(scores)
        if self.best is None or scores["val/lpips_alex"] < self.best:
            self.best = scores["val/lpips_alex"]
            checkpoints_lib.save_best(self.saver, self.workdir, self.config, self.state.g_params,
                                      self.step, scores)
            logging.info("step %d: new best validation LPIPS %.4f", self.step, self.best)

    def show_progress(self) -> None:
        self.progress.update(self.step, self.window.latest or self.last)

    def save_checkpoint(self) -> None:
        self.writer.flush()          # the logs up to a checkpoint survive a kill
        self.saver.save(self.step, self.state, self.data_it, self.config)

    def finish(self) -> None:
        """After the last step (or a stop): the last save finished, then the exports."""
        self.progress.finish()
        self.saver.finish()
        checkpoints_lib.export_guarded(self.saver, self.workdir, self.config, self.state,
                                       self.step)

    def close(self, ok: bool) -> None:
        self.progress.finish()
        console.attach(None)
        self.saver.close(ok)
        for hook in self.hooks:
            getattr(hook, "close", lambda: None)()
        self.writer.close()
        self.data_it.close()

    def result(self) -> dict:
        """The last logged metrics; after a stop request, with the step it stopped at."""
        if not self.stopped:
            return self.last
        logging.warning("%s: stopped at step %d of %d; saved the checkpoint %s and the export; "
                        "resume with the same command (it continues from step %d)",
                        self.stop.name, self.step, self.num_steps, self.ckpts.step_dir(self.step),
                        self.step)
        return {**self.last, "train/stopped_at_step": float(self.step)}

    # ---- helpers ----

    def _scores(self) -> dict:
        return validation.validate(self.apply_fn, self.state.g_params, self.pairs,
                                   self.lpips_alex, self.config)

    def _write_scalars(self, step: int, scalars: dict) -> None:
        self.writer.write_scalars(step, scalars)
        self.jsonl.write(step, scalars)
