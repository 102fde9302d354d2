"""``python -m adacode_jax.cli.comm_report``: the collectives of the sharded train step.

Sets up ``--devices`` fake CPU devices before JAX starts, compiles the train step of
``--config`` on a ``(data, fsdp)`` mesh and prints its collectives and their bytes against the
trainable parameters. The library is :mod:`adacode_jax.tools.comm_report`.
"""
from __future__ import annotations

import json
import os
import sys

from adacode_jax.cli import common
from adacode_jax.tools import comm_report

PROG = "python -m adacode_jax.cli.comm_report"


def build_parser() -> common.ArgumentParser:
    parser = common.ArgumentParser(prog=PROG, description=comm_report.__doc__,
                                   formatter_class=common.HelpFormatter)
    parser.add_argument("--config", default="stage3_sr:x4",
                        help="experiment config: packaged NAME[:VARIANT] or FILE.py[:VARIANT]")
    parser.add_argument("--devices", type=int, default=8, help="mesh size (fake CPU devices)")
    parser.add_argument("--fsdp", type=int, default=1, help="size of the fsdp mesh axis")
    parser.add_argument("--batch_per_device", type=int, default=1,
                        help="global batch = devices x this (at least 2 for stage III)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    return parser


def _print_report(rep: dict, args) -> None:
    """The report as text: mesh, parameter bytes, totals per kind, the largest collectives."""
    pb = rep["param_bytes"]
    print(f"{args.config} on {args.devices} devices (data x fsdp = "
          f"{args.devices // args.fsdp} x {args.fsdp}), global batch {rep['global_batch']}")
    mib = {k: v / 2**20 for k, v in pb.items()}
    print(f"trainable parameters: {mib['trainable']:.2f} MiB (G {mib['generator_trainable']:.2f}"
          f" of {mib['generator']:.2f}, D {mib['discriminator']:.2f})")
    for kind, v in rep["collectives"].items():
        print(f"  {kind:20s} {v['count']:4d} ops  {v['bytes'] / 2**20:10.2f} MiB per device "
              "per step")
    print(f"all-reduce + reduce-scatter = {rep['reduce_bytes_over_trainable']:.3f} x trainable "
          f"bytes; all-gather = {rep['gather_bytes_over_trainable']:.3f} x")
    print("largest collectives:")
    for op in rep["largest"]:
        print(f"  {op['kind']:18s} {op['bytes'] / 2**20:9.3f} MiB  {', '.join(op['shapes'][:4])}"
              f"{' ...' if len(op['shapes']) > 4 else ''}  {op['op_name'][-90:]}")


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "jax" not in sys.modules:   # fake CPU devices, before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from adacode_jax import resources

    config = resources.load_config(args.config)   # NAME[:VARIANT] (packaged) or PATH[:VARIANT]
    config.mesh.data, config.mesh.fsdp = -1, args.fsdp
    config.mesh.num_devices = args.devices
    config.data.batch_size = max(args.devices * args.batch_per_device, 2)
    rep = comm_report.report(config, args.devices)
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        _print_report(rep, args)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
