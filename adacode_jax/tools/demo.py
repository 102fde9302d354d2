"""``make demo``: the shipped compact model on the embedded images, then the whole AdaCode
recipe in miniature, on a CPU.

Part 1 (about a minute): the compact ×4 model shipped with the package (trained by this code on
real photos, ``adacode_jax/pretrained/MODEL_CARD.md``) restores the 11 embedded images, each
degraded by BSRGAN ×4 with a fixed seed (never trained on: the corpus leaves out their source
photos); it writes LQ | bicubic | ours | GT panels with the codebook weight maps and a metrics
table against bicubic.

Part 2 (a few minutes; ``--no-train`` skips it): the three training stages on ``:tiny``
networks and the embedded images:

1. stage I: two class codebooks (``:tiny``), one on "living things and objects", one on
   "textures and scenes" (list files written here; the real split comes from
   ``python -m adacode_jax.cli.split_by_class``);
2. stage II: AdaCode reconstruction from those two codebooks;
3. stage III: ×4 super-resolution with the frozen decoder, on-the-fly BSRGAN pairs;
4. restores a held-out embedded image degraded by BSRGAN (fixed seed) with the tiny model.

The tiny networks train for a few dozen steps: that part shows every stage running end to end
from a fresh clone, not image quality (``--steps-scale`` trains longer). The closing table is
part 1's: the shipped model against bicubic.
"""
from __future__ import annotations

import importlib.util
import os
import time

import numpy as np

CLASSES = {
    "objects": ["astronaut_face", "astronaut_suit", "chelsea", "coffee", "rocket", "camera_grey"],
    "textures": ["brick", "grass", "gravel", "hubble", "retina"],
}
HELD_OUT = "chelsea"      # restored at the end (it is in the training crops too: tiny data)


def _config(name: str, arg: str):
    from adacode_jax.resources import CONFIGS_DIR

    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS_DIR, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def _stage(title: str, config, workdir: str) -> dict:
    from adacode_jax.training import loop as train

    t0 = time.time()
    print(f"\n== {title}: {config.train.num_steps} steps -> {workdir}", flush=True)
    last = train.train_and_evaluate(config, workdir)     # prints its header and progress
    if "train/stopped_at_step" in last:      # Ctrl-C: the stage saved and stopped; so does the demo
        raise KeyboardInterrupt
    shown = {k: round(v, 4) for k, v in last.items()
             if k in ("loss/pix", "loss/g_total", "val/psnr", "val/lpips_alex")}
    print(f"   done in {time.time() - t0:.0f} s: {shown}", flush=True)
    return last


def _scores(img, gt, alex) -> dict:
    import jax.numpy as jnp

    from adacode_jax.evaluation import metrics
    from adacode_jax.models import perceptual

    lp = float(perceptual.lpips_distance(*alex, jnp.asarray(img[None]), jnp.asarray(gt[None]))[0])
    return {"psnr": metrics.psnr(pred=img, gt=gt, crop_border=4),
            "ssim": metrics.ssim(pred=img, gt=gt, crop_border=4), "lpips_alex": lp}


def _table(rows: dict) -> str:
    lines = [f"{'':26s} {'PSNR (Y)':>9s} {'SSIM (Y)':>9s} {'LPIPS-alex':>11s}"]
    for name, m in rows.items():
        lines.append(f"{name:26s} {m['psnr']:9.2f} {m['ssim']:9.4f} {m['lpips_alex']:11.4f}")
    return "\n".join(lines)


def shipped_model_showcase(workdir: str) -> dict:
    """Part 1: the shipped ×4 model vs bicubic on the embedded images (BSRGAN ×4, seed 123).

    Returns ``{"bicubic": means, "adacode compact (shipped)": means}``."""
    from adacode_jax.configs import _base as config_lib
    from adacode_jax.models import perceptual
    from adacode_jax.inference import restorer as restore
    from adacode_jax.evaluation import visualize
    from adacode_jax.evaluation.compare import bicubic_x4
    from adacode_jax import images as data_io
    from adacode_jax.tools import make_testset
    from adacode_jax.data import sources

    t0 = time.time()
    ckpt = restore.shipped_model("sr", 4)
    print(f"== the shipped compact x4 model ({os.path.relpath(ckpt)}) on the embedded images",
          flush=True)
    r = restore.Restorer.from_checkpoint(ckpt, "sr", scale=4, tile=0)
    alex = perceptual.load_lpips("alex")
    out = os.path.join(workdir, "shipped_model")
    per = {"bicubic": [], "adacode compact (shipped)": []}
    for f in sources.list_images(config_lib.EMBEDDED_IMAGES):
        name = os.path.splitext(os.path.basename(f))[0]
        pair = make_testset.make_pair(data_io.read_image(f), "sr_x4",
                                      make_testset.image_rng(123, name))
        gt, lq = pair["gt"], np.round(pair["lq"] * 255) / 255
        ours, maps = r.restore_rgb(lq.astype(np.float32))
        ours = (np.round(np.clip(ours, 0, 1) * 255) / 255).astype(np.float32)
        bic = (np.round(bicubic_x4(lq) * 255) / 255).astype(np.float32)
        per["bicubic"].append(_scores(bic, gt, alex))
        per["adacode compact (shipped)"].append(_scores(ours, gt, alex))
        fig = visualize.labelled_row([("LQ (BSRGAN x4)", lq), ("bicubic", bic),
                                      ("AdaCode compact", ours), ("GT", gt)], panel=256,
                                     title=f"{name}: x4, shipped compact model")
        wm = visualize.weight_map_figure(lq, maps, panel=128, columns=8,
                                         title="codebook weight maps (shared colour scale)")
        fig = visualize.stack_rows(fig, wm)
        data_io.write_png(os.path.join(out, f"{name}.png"), fig.astype(np.float32) / 255)
    rows = {k: {m: float(np.mean([v[m] for v in vals])) for m in vals[0]}
            for k, vals in per.items()}
    print(_table(rows))
    print(f"({len(per['bicubic'])} embedded images, 256x256 GT; panels in {out}/; "
          f"{time.time() - t0:.0f} s)", flush=True)
    return rows


def run(workdir: str, steps_scale: float = 1.0, train: bool = True) -> dict:
    from adacode_jax.configs import _base as config_lib
    from adacode_jax.models import perceptual
    from adacode_jax.inference import restorer as restore
    from adacode_jax.evaluation import visualize
    from adacode_jax import images as data_io
    from adacode_jax.evaluation.compare import bicubic_x4
    from adacode_jax.tools import make_testset

    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    shipped = shipped_model_showcase(workdir)
    if not train:
        return shipped
    lists = os.path.join(workdir, "lists")
    os.makedirs(lists, exist_ok=True)
    steps = lambda n: max(2, int(n * steps_scale))  # noqa: E731

    exports = []
    for cls, names in CLASSES.items():
        list_file = os.path.join(lists, f"{cls}.txt")
        with open(list_file, "w") as f:
            f.write("".join(f"{n}.png\n" for n in names))
        c = _config("stage1_codebook", f"{'architecture' if cls == 'textures' else 'portrait'},tiny")
        c.data.sources = [{"type": "folder", "path": config_lib.EMBEDDED_IMAGES,
                           "list_file": list_file, "weight": 1.0}]
        c.train.num_steps = steps(30)
        c.train.eval_every = c.train.num_steps
        d = os.path.join(workdir, f"stage1_{cls}")
        _stage(f"stage I, '{cls}' codebook", c, d)
        exports.append(os.path.join(d, "export", "generator"))

    c = _config("stage2_adacode", "tiny")
    c.train.num_steps = steps(60)
    c.train.eval_every = c.train.num_steps
    c.train.stage1_checkpoints = tuple(exports)
    s2 = os.path.join(workdir, "stage2")
    _stage("stage II, AdaCode reconstruction", c, s2)

    c = _config("stage3_sr", "x4,tiny")
    c.train.num_steps = steps(40)
    c.train.eval_every = c.train.num_steps
    c.train.stage2_checkpoint = os.path.join(s2, "export", "generator")
    s3 = os.path.join(workdir, "stage3_sr_x4")
    _stage("stage III, x4 super-resolution", c, s3)

    # restore a real image degraded the way the model was trained
    print("\n== restoring an embedded image", flush=True)
    gt = data_io.read_image(os.path.join(config_lib.EMBEDDED_IMAGES, f"{HELD_OUT}.png"))
    pair = make_testset.make_pair(gt, "sr_x4", make_testset.image_rng(123, HELD_OUT))
    gt, lq = pair["gt"], pair["lq"]
    r = restore.Restorer.from_checkpoint(os.path.join(s3, "export", "generator"), "sr", scale=4,
                                         tile=0)
    ours, maps = r.restore_rgb(lq)
    bicubic = bicubic_x4(lq)
    alex = perceptual.load_lpips("alex")
    rows = {"bicubic": _scores(bicubic, gt, alex), "adacode (tiny demo)": _scores(ours, gt, alex)}
    out = os.path.join(workdir, "restored")
    os.makedirs(out, exist_ok=True)
    files = {"lq": lq, "bicubic": bicubic, "adacode": ours, "gt": gt}
    for name, img in files.items():
        data_io.write_png(os.path.join(out, f"{HELD_OUT}_{name}.png"), img)
    fig = visualize.weight_map_figure(lq, maps, title="weight maps of the tiny demo model")
    data_io.write_png(os.path.join(out, f"{HELD_OUT}_weight_maps.png"), fig.astype(np.float32) / 255)

    print(f"\nthe tiny model just trained, on {HELD_OUT} (x4, BSRGAN):")
    print(_table(rows))
    print("(tiny networks after a few dozen steps: no win over bicubic is expected; this part "
          "shows the pipeline, not the paper)")
    print(f"\npictures:     {out}/ and {os.path.join(workdir, 'shipped_model')}/")
    print(f"checkpoints:  {workdir}/<stage>/checkpoints, exports in <stage>/export")
    print(f"TensorBoard:  tensorboard --logdir {workdir}")
    print("\n== the shipped compact x4 model vs bicubic, 11 embedded images (BSRGAN x4, seed 123; "
          "PSNR/SSIM on Y (BT.601), 4-pixel border crop):")
    print(_table(shipped))
    return rows
