"""``python -m adacode_jax.cli.model_sizes``: parameters and GFLOPs of the model families.

Prints a Markdown table, one row per network of each ``--family``. The library is
:mod:`adacode_jax.tools.model_sizes`.
"""
from __future__ import annotations

from adacode_jax.cli import common
from adacode_jax.tools import model_sizes

PROG = "python -m adacode_jax.cli.model_sizes"


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=model_sizes.__doc__.split("\n")[0])
    p.add_argument("--family", action="append", choices=model_sizes.FAMILIES,
                   help="model family (repeatable; default: all)")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(model_sizes.table(args.family or model_sizes.FAMILIES))
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
