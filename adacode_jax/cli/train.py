"""``adacode-train`` / ``python -m adacode_jax.main``: train one AdaCode stage from a config.

Flags, the distributed runtime and logging; everything else is
:func:`adacode_jax.training.loop.train_and_evaluate`. ``--config`` takes a packaged config by name
(``stage3_sr:x4,tiny``) or a config file (``configs/stage3_sr.py:x4``); ``--help`` lists the
configs and ``--describe`` prints every field of one with its value and meaning.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import textwrap

# Where TensorFlow is installed (a TFDS source imports it): no C++ start-up lines on the console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # its oneDNN note is noise here

from absl import app, flags, logging
from ml_collections import config_flags

from adacode_jax import errors, hostmem, resources
from adacode_jax.cli import common

PROG = "adacode-train"
EXAMPLES = (
    "adacode-train --config stage3_sr:x4,tiny --workdir runs/tiny_sr      # CPU smoke run, minutes",
    "adacode-train --config stage3_sr:x4 --describe                       # every field, value, meaning",
    "adacode-train --config stage1_codebook:architecture --workdir runs/s1_arch",
    "adacode-train --config stage3_sr:x4 --workdir runs/sr_x4 \\\n"
    "      --config.train.stage2_checkpoint=runs/s2/export/generator --config.data.batch_size=16",
    "python -m adacode_jax.main --config configs/stage3_sr.py:x4 --workdir gs://bucket/sr --distributed",
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "experiment config: a packaged NAME[:VARIANT] (e.g. stage3_sr:x4,tiny; --help lists them) "
    "or FILE.py[:VARIANT]; override fields with --config.FIELD=VALUE",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "run directory: checkpoints, TensorBoard logs, exports "
                               "(local or gs://); a rerun resumes from it")
_DESCRIBE = flags.DEFINE_bool("describe", False,
                              "print every field of --config (after variant and overrides) with "
                              "its value and meaning, then exit without training")
# Multi-process runs. --distributed: jax.distributed.initialize() with what the cluster tells
# it (Cloud TPU pods, whose workers carry no environment variable we could test for, Slurm,
# Open MPI, Kubernetes); launch/ passes it. The three explicit settings are for machines without
# a cluster manager JAX detects (and the localhost multi-process test).
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "initialise the JAX distributed runtime from the cluster "
                                 "environment (an error if there is none)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0's coordinator (with --num_processes)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "number of processes in the run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "this process's index, 0 ... num_processes-1")
flags.DEFINE_bool("debug", False, f"show tracebacks (or set {common.DEBUG_ENV}=1)")

# Our flags in the order --help shows them, with the placeholder of their value.
_SHOWN = (("config", "NAME[:VARIANT] | FILE.py[:VARIANT]"), ("workdir", "DIR"), ("describe", ""),
          ("distributed", ""), ("coordinator_address", "HOST:PORT"), ("num_processes", "N"),
          ("process_id", "I"), ("debug", ""))
_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")


def help_text() -> str:
    """What ``--help`` prints: usage, the packaged configs and their variants, flags, examples."""
    out = [f"usage: {PROG} --config NAME[:VARIANT] --workdir DIR [--config.FIELD=VALUE ...]",
           f"       {PROG} --config NAME[:VARIANT] --describe",
           "",
           "Train one AdaCode stage (I: class codebooks, II: AdaCode reconstruction, III: "
           "restoration)",
           "from an experiment config. Also: python -m adacode_jax.main.",
           "",
           "Configs (--config NAME picks a packaged one, NAME:VARIANT one of its variants; a "
           "config",
           "of your own: --config my_config.py[:VARIANT], a file defining get_config(variant)):"]
    for s in resources.config_summaries():
        out.append(f"  {s.name}")
        out.extend(textwrap.wrap(s.summary, 96, initial_indent="      ",
                                 subsequent_indent="      "))
        if s.variants:
            out.extend(textwrap.wrap(f"variants: {s.variants}", 96, initial_indent="      ",
                                     subsequent_indent="        "))
    out += ["", "Flags:"]
    for name, meta in _SHOWN:
        flag = flags.FLAGS[name]
        head = f"  --{name}" + (f" {meta}" if meta else "")
        default = "" if flag.default in (None, False) else f" (default: {flag.default})"
        out.append(head)
        out.extend(textwrap.wrap(flag.help + default, 96, initial_indent="      ",
                                 subsequent_indent="      "))
    out += ["  --config.FIELD=VALUE",
            "      override one config field, type-checked (e.g. --config.train.num_steps=100); "
            "--describe lists",
            "      the fields",
            "  --helpfull",
            "      every flag, including those of absl and JAX",
            "",
            "Examples:"]
    out += [f"  {e}" for e in EXAMPLES]
    return "\n".join(out) + "\n"


def _config_arg_index(argv: list[str]) -> list[tuple[int, str, str]]:
    """(index, prefix, value) of every ``--config VALUE`` / ``--config=VALUE`` in ``argv``
    (not the ``--config.FIELD=VALUE`` overrides)."""
    found = []
    for i, a in enumerate(argv):
        for dash in ("--", "-"):
            if a == f"{dash}config" and i + 1 < len(argv):
                found.append((i + 1, "", argv[i + 1]))
            elif a.startswith(f"{dash}config="):
                found.append((i, f"{dash}config=", a[len(dash) + 7:]))
    return found


def resolve_argv(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config NAME[:VARIANT]`` turned into the packaged file's path,
    which is what ml_collections' config flag reads; paths are kept as given."""
    argv = list(argv)
    for i, prefix, value in _config_arg_index(argv):
        argv[i] = prefix + resources.resolve_config(value)
    return argv


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parser, with our ``--help``, config names and one-line errors."""
    if any(a in _HELP_FLAGS for a in argv[1:]):
        sys.stdout.write(help_text())
        sys.exit(0)
    argv = resolve_argv(argv)    # a UserError here is printed by common.run
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        text = str(e).strip()
        if "Traceback" in text:   # get_config raised: its own message is the last line
            name = text.split(":", 1)[0].replace("flag ", "")
            text = f"{name}: {text.splitlines()[-1].split(': ', 1)[-1]}"
        raise errors.UserError(" ".join(text.split()), f"see {PROG} --help") from None
    except (AttributeError, KeyError) as e:   # --config.FIELD=... naming no field
        overrides = [a.split("=")[0] for a in argv if a.lstrip("-").startswith("config.")]
        field = str(e).strip("\"'")
        raise errors.UserError(f"{' '.join(overrides)}: no config field {field!r}",
                               f"{PROG} --config ... --describe lists the fields") from None


def _maybe_initialize_distributed() -> None:
    """``jax.distributed.initialize()``: with the explicit flags, with ``--distributed``, or when
    a Slurm, Open MPI, Kubernetes or TPU environment variable is present."""
    import jax

    explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    given = [v is not None for v in explicit]
    if any(given) and not all(given):
        raise errors.UserError("--coordinator_address, --num_processes and --process_id go together",
                               "give all three or none")
    if all(given):
        jax.distributed.initialize(*explicit)
        return
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
        return
    cluster = any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                                            "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS",
                                            "KUBERNETES_SERVICE_HOST", "MEGASCALE_COORDINATOR_ADDRESS"))
    if not cluster:
        return
    try:
        jax.distributed.initialize()
    except ValueError as e:   # a plain machine inside one of those environments
        logging.warning("jax.distributed.initialize() skipped: %s", e)


class _QuietLibraries(std_logging.Filter):
    """On the terminal, INFO lines only from this package (the libraries' INFO chatter:
    Orbax, the XLA backend probe, clu, still reaches ``train.log``); warnings and errors
    from anywhere."""

    def filter(self, record) -> bool:
        return (record.levelno >= std_logging.WARNING
                or f"{os.sep}adacode_jax{os.sep}" in (record.pathname or ""))


def describe_text() -> str:
    """``--describe``: the parsed config, every field with its value and meaning."""
    from adacode_jax.configs import _base as config_lib

    spec = config_flags.get_config_filename(flags.FLAGS["config"])   # FILE[:VARIANT]
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    title = f"--config {spec}" + "".join(f" --config.{k}={v!r}" for k, v in overrides.items())
    return config_lib.describe(_CONFIG.value, title=title, config_file=spec.split(":")[0])


def run_training(argv) -> None:
    """The absl main: after flags are parsed, set up the runtime and train."""
    del argv
    if _CONFIG.value is None:
        raise errors.UserError("--config is missing", f"give one, e.g. --config stage3_sr:x4,tiny; "
                               f"{PROG} --help lists them")
    if _DESCRIBE.value:
        print(describe_text())
        return
    if not _WORKDIR.value:
        raise errors.UserError("--workdir is missing", "give the run directory (a rerun resumes "
                               "from it), or --describe to only print the config")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    # Before JAX's CPU client starts its threads: XLA:CPU's per-step buffers stay mapped.
    logging.info("host memory: %s (adacode_jax.hostmem)", hostmem.keep_freed_memory())
    _maybe_initialize_distributed()
    import jax

    from adacode_jax.training import loop as train  # after the runtime is up

    if jax.process_count() > 1:    # one process: the run header names the devices
        logging.info("process %d of %d; local devices %s; global devices %d",
                     jax.process_index(), jax.process_count(), jax.local_devices(),
                     jax.device_count())
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        app.run(run_training, argv=[PROG, *argv], flags_parser=_parse_flags)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
