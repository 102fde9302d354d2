"""``python -m adacode_jax.cli.app``: the local web app (Gradio) for restoring images and exploring
the codebooks; the page itself is :mod:`adacode_jax.app.webapp`.

Everything the app writes (uploads, results) goes into one temporary folder, removed on exit.
Needs the ``app`` extra (``pip install 'adacode-jax[app]'``: Gradio).
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile

from adacode_jax.cli import common

EXAMPLES = (
    "python -m adacode_jax.cli.app                                # shipped compact x4 model",
    "python -m adacode_jax.cli.app --port 7860 --model ckpt/sr_x2  # plus a x2 checkpoint directory",
    "python -m adacode_jax.cli.app --model official=AdaCode_SR_X4_model_g.pth:sr_x4 "
    "--model AdaCode_Inpaint_model_g.pth:inpaint",
)


def build_parser():
    p = common.ArgumentParser(
        prog="adacode-app",
        description="A local web page: upload an image, restore it (SR x4 with the shipped "
                    "model; SR x2 / inpainting with --model), compare LQ and result, download "
                    "it at full bit depth, and switch AdaCode's codebooks off and on.",
        examples=EXAMPLES)
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]PATH[:KIND]",
                   help="a model to offer besides the shipped ones: an inference checkpoint "
                        "directory, or an official .pth/.npz with :KIND (sr_x4, sr_x2, inpaint); "
                        "repeatable")
    p.add_argument("--no-shipped", action="store_true",
                   help="offer only the --model models, not the ones shipped with the package")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default: Gradio's, 7860 or the next free one)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest upload (width x height) decoded; default: $ADACODE_MAX_PIXELS "
                        "or the restore CLI's cap; 0: none")
    p.add_argument("--max-file-size", default="200mb", help="largest upload in bytes ('200mb')")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="compute dtype; auto: bfloat16 on GPU/TPU, float32 on CPU")
    p.add_argument("--tile", default="auto",
                   help="tile side in input pixels, 'auto' (the restore CLI's default) or 0")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tile = args.tile if args.tile == "auto" else int(args.tile)
    except ValueError:
        return common.fail(f"--tile must be 'auto' or an integer, got {args.tile!r}")
    from adacode_jax.app import webapp as app   # Gradio is imported only by app.build_ui

    specs = [] if args.no_shipped else app.shipped_models()
    specs += [app.parse_model(text) for text in args.model]
    workdir = tempfile.mkdtemp(prefix="adacode-app-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    # A plain `kill` also removes the folder: SIGTERM unwinds like Ctrl-C, through atexit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Gradio's upload cache goes into the same folder; Gradio reads this when imported.
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(workdir, "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Gradio imports matplotlib, whose font cache would otherwise go to ~/.cache.
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(workdir, "matplotlib"))
    try:
        import gradio  # noqa: F401
    except ImportError:
        return common.fail("the app needs Gradio, which is not installed; "
                           "pip install 'adacode-jax[app]' (or gradio)")
    engine = app.Engine(specs, workdir, max_pixels=args.max_pixels, dtype=args.dtype, tile=tile)
    print(f"models: {', '.join(s.label for s in engine.specs.values())}; files in {workdir}",
          file=sys.stderr, flush=True)
    app.launch(engine, host=args.host, port=args.port, max_file_size=args.max_file_size)
    return 0


main = common.command(_main)
console = common.entry(_main)

if __name__ == "__main__":
    console()
