"""``python -m adacode_jax.cli.device_check``: one check of ``launch/device_run.sh`` per call.

Each subcommand writes its result as JSON to --json (parity and speed after every case, so a
timeout keeps what was measured) and exits 0 when everything passed, 1 otherwise. The library
is :mod:`adacode_jax.tools.device_check`.
"""
from __future__ import annotations

import argparse
import json
import os

from adacode_jax.cli import common

PROG = "python -m adacode_jax.cli.device_check"
EXAMPLES = (
    f"{PROG} env --json out/env.json",
    f"{PROG} parity --json out/parity.json --dtypes float32 bfloat16",
    f"{PROG} speed --json out/speed.json --batches 8 16 --lq-sizes 64 128",
    f"{PROG} score --json out/score.json --model trained=runs/sr_x4/export/generator",
    f"{PROG} summary --steps work/steps.tsv --work work --json out/summary.json",
)


def _subparser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text,
                       formatter_class=common.HelpFormatter)
    p.add_argument("--json", required=True, help="where the result goes")
    return p


def build_parser() -> common.ArgumentParser:
    from adacode_jax.tools import device_check as dc

    p = common.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1],
                              examples=EXAMPLES)
    sub = p.add_subparsers(dest="command", required=True, parser_class=common.ArgumentParser)
    _subparser(sub, "env", "the device, driver, versions and missing modules")
    par = _subparser(sub, "parity", "official networks against the reference outputs")
    par.add_argument("--kinds", nargs="+", choices=dc.PARITY_KINDS, default=list(dc.PARITY_KINDS),
                     help="networks")
    par.add_argument("--dtypes", nargs="+", choices=sorted(dc.PARITY_BOUNDS),
                     default=["float32", "bfloat16"], help="compute dtypes")
    par.add_argument("--cases", nargs="+", metavar="KIND:DTYPE", default=None,
                     help="these networks in these dtypes instead of every --kinds in every "
                          "--dtypes, e.g. stage1:float32 disc:bfloat16")
    sp = _subparser(sub, "speed", "stage III x4 step, x4 forward and data pipeline")
    sp.add_argument("--batches", nargs="+", type=int, default=[8, 16], help="training batches")
    sp.add_argument("--dtypes", nargs="+", choices=("bfloat16", "float32"),
                    default=["bfloat16", "float32"], help="compute dtypes, in this order")
    sp.add_argument("--lq-sizes", nargs="+", type=int, default=[64, 128],
                    help="x4 forward input sides (64 -> 256² output, 128 -> 512²)")
    sp.add_argument("--runs", type=int, default=5, help="timed forward runs")
    sp.add_argument("--train-runs", type=int, default=5, help="timed training steps")
    sp.add_argument("--data-seconds", type=float, default=5.0, help="data pipeline time")
    sp.add_argument("--tiny", action="store_true",
                    help="the :tiny networks on small inputs (a smoke test; figures mean nothing)")
    sc = _subparser(sub, "score", "trained exports and bicubic on the held-out set")
    sc.add_argument("--model", action="append", required=True, metavar="NAME=EXPORT",
                    help="an exported x4 generator (repeatable)")
    sc.add_argument("--work", required=True, help="folder for predictions")
    sc.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    tr = _subparser(sub, "train-report", "steps, rate and losses of a training work directory")
    tr.add_argument("--workdir", required=True, help="the run's --workdir")
    tr.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                    help="extra fields (repeatable), e.g. the training images")
    su = _subparser(sub, "summary", "every step's status and result in one file")
    su.add_argument("--steps", required=True,
                    help="tab-separated lines: step, exit code, seconds, status")
    su.add_argument("--work", required=True, help="folder of the steps' <step>.json results")
    su.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                    help="extra top-level fields (repeatable)")
    return p


def _notes(pairs: list[str]) -> dict:
    """``{key: value}`` of ``KEY=VALUE`` items; a value that reads as a number is one."""
    out: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        for kind in (int, float):
            try:
                out[key] = kind(value)
                break
            except ValueError:
                out[key] = value
    return out


def _env(args) -> int:
    from adacode_jax.tools import device_check as dc

    env = dc.environment()
    env["line"] = dc.environment_line(env)
    env["ok"] = True
    dc.write_json(args.json, env)
    print(env["line"])
    return 0


def _parity(args, parser) -> int:
    from adacode_jax.tools import device_check as dc

    pairs = [(k, d) for d in args.dtypes for k in args.kinds]
    if args.cases:
        pairs = [tuple(c.split(":", 1)) for c in args.cases]
        bad = [c for c, (k, d) in zip(args.cases, pairs)
               if k not in dc.PARITY_KINDS or d not in dc.PARITY_BOUNDS]
        if bad:
            parser.error(f"--cases {' '.join(bad)}: expected KIND:DTYPE with KIND one of "
                         f"{', '.join(dc.PARITY_KINDS)} and DTYPE one of "
                         f"{', '.join(dc.PARITY_BOUNDS)}")
    out = dc.run_cases(dc.parity_cases(pairs), args.json)
    for dtype in dict.fromkeys(d for _, d in pairs):
        errs = [c.get("max_rel_err") for n, c in out["cases"].items() if n.endswith(dtype)]
        worst = max((e for e in errs if e is not None), default=None)
        print(f"parity {dtype}: worst max|ours-ref|/max|ref| = {worst} "
              f"(bound {dc.PARITY_BOUNDS[dtype]}) over {len(errs)} networks")
    return 0 if out["ok"] else 1


def _speed(args) -> int:
    from adacode_jax.tools import device_check as dc

    cases = dc.speed_cases(batches=args.batches, dtypes=args.dtypes, lq_sizes=args.lq_sizes,
                           runs=args.runs, train_runs=args.train_runs,
                           data_seconds=args.data_seconds, tiny=args.tiny)
    out = dc.run_cases(cases, args.json)
    out["data_demand"] = dc.data_demand(out)
    dc.write_json(args.json, out)
    return 0 if out["ok"] else 1


def _score(args, parser) -> int:
    from adacode_jax.tools import device_check as dc

    models = common.named_paths(args.model, parser, "--model", "EXPORT")
    out = dc.score(models, args.work, limit=args.limit)
    dc.write_json(args.json, out)
    print(out["table"])
    return 0


def _train_report(args) -> int:
    from adacode_jax.tools import device_check as dc

    out = {**dc.train_report(args.workdir), **_notes(args.note), "ok": True}
    dc.write_json(args.json, out)
    print(json.dumps(out, sort_keys=True))
    return 0


def _summary(args) -> int:
    from adacode_jax.tools import device_check as dc

    out = dc.summary(args.steps, args.work, _notes(args.note))
    dc.write_json(args.json, out)
    print(f"summary: {out['failed_steps']} of {len(out['steps'])} steps failed; {args.json}")
    return 0


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    if args.command in ("parity", "score"):
        return {"parity": _parity, "score": _score}[args.command](args, parser)
    run = {"env": _env, "speed": _speed, "train-report": _train_report,
           "summary": _summary}[args.command]
    return run(args)


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
