"""A local web app (Gradio) for restoring images and exploring AdaCode's codebooks.

    python -m adacode_jax.cli.app                                  # shipped compact x4 model
    python -m adacode_jax.cli.app --model ckpt/sr_x2 --model inpaint=AdaCode_Inpaint.pth:inpaint

Upload an image, pick the task and model, and get the LQ and the result side by side (a
before/after slider and the two pictures), a download of the result at full bit depth (as the
restore CLI writes it: 16-bit PNG in, 16-bit PNG out), the K weight maps on one shared colour
scale with the dominant codebook per region, and switches that drop codebooks or keep only one
(:mod:`adacode_jax.inference.explorer`) and re-decode. Inpainting masks are painted with a brush.

The work is done by :class:`Engine` (no Gradio in it, tested on its own): the restore CLI's
reading (:func:`adacode_jax.images.read_image_raw` with its pixel cap), restorer
(:class:`adacode_jax.inference.restorer.Restorer`: tiling, alpha, grey, 16-bit), and writing, into a
temporary folder only. :func:`build_ui` wires it to Gradio; one restoration runs at a time
(one queue, concurrency 1, shared by every event that runs the network).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import uuid
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from adacode_jax.models import checkpointing
from adacode_jax import errors
from adacode_jax.inference import explorer, safetensors_file
from adacode_jax import images as imageio
from adacode_jax.inference import restorer as restore
from adacode_jax.evaluation import visualize

# What each network kind is called in the task chooser.
TASK_LABELS = {"sr_x4": "Super-resolution ×4", "sr_x2": "Super-resolution ×2",
               "inpaint": "Inpainting (paint the holes)"}
KINDS = tuple(TASK_LABELS)
# Longest side of the pictures sent to the browser (the download is always full size).
PREVIEW_SIDE = 2048
# Results older than this are deleted from the temporary folder when a new one is written.
KEEP_RESULTS_S = 3600.0
_STATE_DICT_ENDINGS = (".pth", ".pt", ".npz", ".safetensors")


# ---- models ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model the app offers: ``path`` is an inference checkpoint directory or an official
    state dict; ``kind`` one of :data:`KINDS`."""
    name: str
    path: str
    kind: str
    shipped: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind}{', shipped' if self.shipped else ''})"


def _directory_kind(path: str) -> str:
    meta = os.path.join(path, checkpointing.MODEL_JSON)
    if not os.path.isfile(meta):
        raise errors.UserError(f"{path}: not an inference checkpoint (no {checkpointing.MODEL_JSON})",
                               "give a directory written by training or adacode-convert, or an "
                               "official .pth with :KIND")
    with open(meta, encoding="utf-8") as f:
        kind = json.load(f).get("model", {}).get("kind")
    if kind not in KINDS:
        raise errors.UserError(f"{path}: holds a {kind!r} network, which the app does not run",
                               f"give a restoration network ({', '.join(KINDS)})")
    return kind


def parse_model(text: str) -> ModelSpec:
    """``[NAME=]PATH[:KIND]`` -> :class:`ModelSpec`. ``KIND`` (sr_x4, sr_x2, inpaint) is needed
    for an official ``.pth``/``.pt``/``.npz``/``.safetensors`` (unless the ``.safetensors``
    header names it) and checked against a checkpoint directory; ``NAME`` defaults to the file
    or directory name."""
    name, sep, rest = text.partition("=")
    if not sep or os.sep in name:
        name, rest = "", text
    path, colon, kind = rest.rpartition(":")
    if not colon or kind not in KINDS:
        path, kind = rest, None
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise errors.UserError(f"--model {text}: {path} does not exist", "check the path")
    if os.path.isdir(path):
        found = _directory_kind(path)
        if kind is not None and kind != found:
            raise errors.UserError(f"--model {text}: {path} holds a {found} network, not {kind}",
                                   f"drop :{kind} or give another checkpoint")
        kind = found
    elif path.endswith(_STATE_DICT_ENDINGS):
        kind = kind or safetensors_file.stored_kind(path)    # adacode-export's files say it
        if kind is not None and kind not in KINDS:
            raise errors.UserError(f"--model {text}: {path} holds a {kind!r} network, which the "
                                   "app does not run", f"give a restoration network ({', '.join(KINDS)})")
        if kind is None:
            raise errors.UserError(f"--model {text}: an official state dict needs its kind",
                                   f"append :{'|:'.join(KINDS)} (e.g. {path}:sr_x4)")
    else:
        raise errors.UserError(f"--model {text}: {path} is neither an inference checkpoint "
                               f"directory nor an official state dict ({', '.join(_STATE_DICT_ENDINGS)})",
                               "give one of those")
    name = name or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    return ModelSpec(name, os.path.abspath(path), kind)


def shipped_models() -> list[ModelSpec]:
    """The models shipped inside the package (:data:`adacode_jax.inference.restorer.SHIPPED`)."""
    specs = []
    for kind, name in sorted(restore.SHIPPED.items()):
        path = os.path.join(restore.PRETRAINED_DIR, name)
        if os.path.isfile(os.path.join(path, checkpointing.MODEL_JSON)):
            specs.append(ModelSpec(name, path, kind, shipped=True))
    return specs


# ---- pictures for the browser ---------------------------------------------------------------

def display_rgb(image: np.ndarray, max_side: int | None = PREVIEW_SIDE) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of any image layout :func:`imageio.read_image_raw` returns (alpha
    composited over white), shrunk (area) to ``max_side`` if larger: what the page shows."""
    rgb, alpha, _ = imageio.split_channels(image)
    if alpha is not None:
        rgb = rgb * alpha[:, :, None] + (1.0 - alpha[:, :, None])
    h, w = rgb.shape[:2]
    if max_side and max(h, w) > max_side:
        s = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                         interpolation=cv2.INTER_AREA)
    return imageio.to_dtype(rgb, np.uint8)


def upscale_nearest(picture: np.ndarray, height: int, width: int) -> np.ndarray:
    """``picture`` resized with nearest neighbours (the LQ side of the before/after slider
    shows the input's pixels at the output's size)."""
    return cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST)


def mask_from_editor(value: dict | None, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """``(H, W)`` bool holes from a ``gr.ImageEditor`` value: every pixel painted on any layer
    (alpha > 0), resized (nearest) to ``shape`` if given (the editor shows a preview, which
    may be smaller than the image); None when nothing is painted."""
    if not value:
        return None
    holes = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[2] == 4:
            painted = layer[..., 3] > 0           # RGBA stroke layer: painted where opaque
        elif layer.ndim == 3:
            painted = layer.any(axis=-1)
        else:
            painted = layer > 0                   # a mask already
        holes = painted if holes is None else holes | painted
    if holes is None or not holes.any():
        return None
    if shape is not None and holes.shape != tuple(shape):
        holes = cv2.resize(holes.astype(np.uint8), (shape[1], shape[0]),
                           interpolation=cv2.INTER_NEAREST) > 0
    return holes


# ---- the engine -----------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """One restoration: the full-depth output, its file, the weight maps and what was used."""
    output: np.ndarray              # as restore.Restorer.restore returns it (input's layout/dtype)
    path: str                       # the written file (inside Engine.workdir)
    maps: np.ndarray                # (h, w, K) predicted weight maps
    kept: tuple[int, ...]           # codebooks used
    seconds: float
    lq: np.ndarray                  # the network's input as the page shows it (holes painted)


class Engine:
    """Models, reading, restoring and writing for the app; one restoration at a time.

    Args:
      specs: the models offered (the first is the default).
      workdir: the folder results are written to (a temporary folder).
      max_pixels: the pixel cap of :func:`adacode_jax.images.read_image_raw` (None: the
        project's default / ``$ADACODE_MAX_PIXELS``).
      dtype, tile: as the restore CLI's ``--dtype`` and ``--tile``.
    """

    def __init__(self, specs: Sequence[ModelSpec], workdir: str, *, max_pixels: int | None = None,
                 dtype: str = "auto", tile: int | str = "auto"):
        if not specs:
            raise errors.UserError("no model to offer", "pass --model with a checkpoint")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise errors.UserError(f"--model: the name {dupes[0]!r} is used twice",
                                   "name models with NAME=PATH")
        self.specs = {s.name: s for s in specs}
        self.workdir = os.path.abspath(workdir)
        self.max_pixels, self.dtype, self.tile = max_pixels, dtype, tile
        self._restorers: dict[str, restore.Restorer] = {}
        self._lock = threading.Lock()     # the device runs one restoration at a time

    # ---- models ----
    def tasks(self) -> list[str]:
        """The kinds with at least one model, in :data:`KINDS` order."""
        return [k for k in KINDS if any(s.kind == k for s in self.specs.values())]

    def models_for(self, kind: str) -> list[ModelSpec]:
        return [s for s in self.specs.values() if s.kind == kind]

    def restorer(self, name: str) -> restore.Restorer:
        """The (cached) restorer of a model, loaded as the restore CLI loads it."""
        if name not in self.specs:
            raise errors.UserError(f"model {name!r} is not offered",
                                   f"choose one of {', '.join(self.specs)}")
        with self._lock:
            if name not in self._restorers:
                spec = self.specs[name]
                task = "inpaint" if spec.kind == "inpaint" else "sr"
                scale = None if spec.kind == "inpaint" else int(spec.kind[-1])
                self._restorers[name] = restore.Restorer.from_checkpoint(
                    spec.path, task, scale=scale, dtype=self.dtype, tile=self.tile, progress=True)
            return self._restorers[name]

    def num_codebooks(self, name: str) -> int:
        return explorer.num_codebooks(self.restorer(name))

    # ---- files ----
    def read(self, path: str) -> np.ndarray:
        """An uploaded file as the restore CLI reads it (pixel cap, EXIF, 8/16-bit, alpha).

        Raises:
          UserError: unreadable, too large or not finite; the message names the file by its
            own name (not the upload cache's path).
        """
        shown = os.path.basename(path)
        try:
            image = imageio.read_image_raw(path, max_pixels=self.max_pixels)
            imageio.check_finite(image, path)
        except (imageio.ImageReadError, ValueError, errors.UserError) as e:
            raise errors.UserError(str(e).replace(path, shown)) from e
        return image

    def _result_path(self, source: str, image: np.ndarray, kept: tuple[int, ...], k: int) -> str:
        results = os.path.join(self.workdir, "results")
        os.makedirs(results, exist_ok=True)
        now = time.time()
        for entry in os.scandir(results):     # the app may run for days: keep the folder small
            try:
                if now - entry.stat().st_mtime > KEEP_RESULTS_S:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass
        stem = os.path.splitext(os.path.basename(source))[0] or "image"
        if len(kept) < k:
            stem += "_only-" + "-".join(f"w{i}" for i in kept)
        folder = os.path.join(results, uuid.uuid4().hex[:12])
        os.makedirs(folder)
        return os.path.join(folder, stem + imageio.output_extension(source, image, "auto"))

    # ---- restoring ----
    def run(self, name: str, source: str, *, holes: np.ndarray | None = None,
            drop: Sequence[int] = (), progress: Callable[[float, str], Any] | None = None) -> Result:
        """Restore the file ``source`` with model ``name``, codebooks ``drop`` switched off;
        write the result (full bit depth, the CLI's format choice) into :attr:`workdir`.
        ``holes``: inpainting mask (True = hole), resized (nearest) to the image if needed."""
        progress = progress or (lambda *_: None)
        image = self.read(source)
        restorer = self.restorer(name)
        if holes is not None and restorer.scale != 1:
            holes = None                      # a painted mask only means something for inpainting
        if holes is not None and holes.shape != image.shape[:2]:
            holes = mask_from_editor({"layers": [holes]}, image.shape[:2])
        k = explorer.num_codebooks(restorer)
        drop = tuple(sorted(set(int(i) for i in drop)))
        kept = tuple(i for i in range(k) if i not in drop)
        progress(0.05, "restoring (the first image of a size compiles the network)")
        start = time.perf_counter()
        with self._lock:
            if drop:
                out, maps = explorer.restore_with_codebooks(restorer, image, drop=drop, mask=holes)
            else:
                out, maps = restorer.restore_with_maps(image, holes)
        seconds = time.perf_counter() - start
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            raise errors.UserError("the output holds NaN/Inf values and was not written",
                                   "try another model")
        progress(0.95, "writing the result")
        path = imageio.write_image_raw(self._result_path(source, image, kept, k), out)
        lq = display_rgb(image)
        if holes is not None:
            small = cv2.resize(holes.astype(np.uint8), (lq.shape[1], lq.shape[0]),
                               interpolation=cv2.INTER_NEAREST) > 0
            lq = np.where(small[:, :, None], np.uint8(255), lq)
        return Result(out, path, maps, kept, seconds, lq)


def weight_panel(result: Result, title: str = "") -> tuple[np.ndarray | None, str]:
    """The weight-map figure (K maps on one shared scale, their means, the dominant codebook
    with its legend) and a Markdown table of per-codebook statistics."""
    if result.maps.shape[-1] == 0:
        return None, "This network has a single codebook: no weight maps."
    fig = visualize.weight_map_figure(result.lq.astype(np.float32) / 255.0, result.maps,
                                      panel=240, title=title or None)
    stats = explorer.weight_map_stats(result.maps)
    lo, hi = stats.scale
    legend = " ".join(f"<span style='color:rgb{tuple(int(c) for c in visualize.PALETTE[i % len(visualize.PALETTE)])}'>"
                      f"■</span> w{i}" for i in range(result.maps.shape[-1]))
    text = (f"Shared colour scale {lo:+.3f} … {hi:+.3f} (1st–99th percentile of all maps). "
            f"Dominant codebook colours: {legend}\n\n{stats.table()}")
    return fig, text


# ---- the Gradio page ------------------------------------------------------------------------

def _codebook_label(i: int) -> str:
    return f"w{i}"


def _solo_value(used: list[str] | None, k: int) -> str | None:
    """The "keep only" choice matching the ticked codebooks: "all", the one, or none."""
    used = list(used or [])
    if len(used) == k:
        return "all"
    return used[0] if len(used) == 1 else None


def _user_error(gr, e: Exception):
    """An error Gradio shows in the page until dismissed."""
    return gr.Error(str(e), duration=None)


def _model_choices(engine: Engine, kind: str) -> list[tuple[str, str]]:
    return [(s.label, s.name) for s in engine.models_for(kind)]


def _restore_panel(gr, engine: Engine) -> dict[str, Any]:
    """The task, model, upload, mask editor and result components (created in the current
    ``Blocks``), by name."""
    tasks = engine.tasks()
    first_task = tasks[0]
    c: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=1):
            c["task"] = gr.Radio([(TASK_LABELS[k], k) for k in tasks], value=first_task,
                                 label="Task", elem_id="task")
            c["model"] = gr.Dropdown(_model_choices(engine, first_task),
                                     value=engine.models_for(first_task)[0].name, label="Model",
                                     elem_id="model")
            c["upload"] = gr.File(label="Image (PNG, JPEG, WebP, TIFF; grey, RGBA, 16-bit)",
                                  file_types=list(imageio.IMAGE_EXTENSIONS), type="filepath",
                                  elem_id="upload")
            c["editor"] = gr.ImageEditor(
                label="Paint the holes (white brush)", type="numpy", sources=[],
                transforms=[], layers=False, image_mode="RGBA", format="png",
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                visible=first_task == "inpaint", elem_id="editor")
            c["run"] = gr.Button("Restore", variant="primary", elem_id="restore")
            c["status"] = gr.Markdown("No image yet.", elem_id="status")
            c["download"] = gr.DownloadButton("Download result (full bit depth)", value=None,
                                              interactive=False, elem_id="download")
        with gr.Column(scale=2):
            c["slider"] = gr.ImageSlider(label="LQ | restored (drag to compare)", type="numpy",
                                         format="png", elem_id="slider", max_height=640)
            with gr.Row():
                c["lq_view"] = gr.Image(label="LQ (input, nearest neighbour)", type="numpy",
                                        format="png",
                                        interactive=False, elem_id="lq")
                c["out_view"] = gr.Image(label="Restored", type="numpy", format="png",
                                         interactive=False, elem_id="result")
    return c


def _explorer_panel(gr, k: int) -> dict[str, Any]:
    """The codebook switches and weight-map views for a ``k``-codebook network, by name."""
    c: dict[str, Any] = {}
    with gr.Accordion("Codebook explorer", open=True, elem_id="explorer"):
        gr.Markdown("The latent is a per-pixel mix of K basis codebooks, "
                    "z = Σ_k w_k · after_quant_k(z_q,k). Untick a codebook to set its weight "
                    "to 0, or keep only one, and the image is decoded again.")
        with gr.Row():
            c["books"] = gr.CheckboxGroup([_codebook_label(i) for i in range(k)],
                                          value=[_codebook_label(i) for i in range(k)],
                                          label="Codebooks used", elem_id="codebooks")
            c["solo"] = gr.Radio(["all"] + [_codebook_label(i) for i in range(k)], value="all",
                                 label="Keep only", elem_id="solo")
        with gr.Row():
            c["maps_view"] = gr.Image(label="Weight maps (one shared colour scale) and dominant "
                                      "codebook", show_label=False, type="numpy", format="png",
                                      interactive=False, elem_id="weight-maps")
            c["stats_view"] = gr.Markdown(elem_id="weight-stats")
    return c


def _handlers(gr, engine: Engine) -> dict[str, Callable]:
    """The page's event handlers, by name: task, model and upload changes, and restoring."""

    def on_task(kind):
        choices = _model_choices(engine, kind)
        return (gr.update(choices=choices, value=choices[0][1]),
                gr.update(visible=kind == "inpaint"))

    def on_model(name):
        try:
            k = engine.num_codebooks(name)
        except Exception as e:  # noqa: BLE001 - shown to the user
            raise _user_error(gr, e) from e
        labels = [_codebook_label(i) for i in range(k)]
        return gr.update(choices=labels, value=labels), gr.update(choices=["all"] + labels,
                                                                  value="all")

    def on_upload(path):
        if not path:
            return None, None, "No image yet."
        try:
            image = engine.read(path)
        except errors.UserError as e:
            raise _user_error(gr, e) from e
        pic = display_rgb(image)
        layout = imageio.split_channels(image)[2]
        kind = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}[layout.channels]
        note = f"{os.path.basename(path)}: {image.shape[1]}×{image.shape[0]}, {kind}, {image.dtype}."
        return pic, {"background": pic, "layers": [], "composite": pic}, note

    def restore_now(name, path, editor_value, used, progress=gr.Progress(track_tqdm=True)):
        if not path:
            raise gr.Error("Upload an image first.")
        try:
            k = engine.num_codebooks(name)
            drop = [i for i in range(k) if _codebook_label(i) not in (used or [])]
            holes = mask_from_editor(editor_value)    # sized to the image by Engine.run
            result = engine.run(name, path, holes=holes, drop=drop,
                                progress=lambda f, d: progress(f, desc=d))
        except (errors.UserError, ValueError, MemoryError, OSError) as e:
            raise _user_error(gr, e) from e
        out = display_rgb(result.output)
        lq_big = upscale_nearest(result.lq, out.shape[0], out.shape[1])
        fig, text = weight_panel(result, title=f"{name}: codebooks "
                                 + ", ".join(_codebook_label(i) for i in result.kept))
        oh, ow = result.output.shape[:2]
        msg = (f"Restored {os.path.basename(path)} → {ow}×{oh} {result.output.dtype} in "
               f"{result.seconds:.1f} s with {name}; codebooks used: "
               f"{', '.join(_codebook_label(i) for i in result.kept)}. "
               f"File: `{os.path.basename(result.path)}`.")
        return ((lq_big, out), lq_big, out, gr.update(value=result.path, interactive=True),
                fig, text, msg)

    def solo_then_restore(choice, name, path, editor_value, progress=gr.Progress(track_tqdm=True)):
        k = engine.num_codebooks(name)
        used = [_codebook_label(i) for i in range(k)] if choice == "all" else [choice]
        if not path:
            return (used,) + (gr.update(),) * 7
        return (used,) + restore_now(name, path, editor_value, used, progress)

    return {"on_task": on_task, "on_model": on_model, "on_upload": on_upload,
            "restore_now": restore_now, "solo_then_restore": solo_then_restore}


def build_ui(engine: Engine):
    """The Gradio ``Blocks`` page for ``engine`` (queued: one network run at a time)."""
    import gradio as gr

    k0 = engine.num_codebooks(engine.models_for(engine.tasks()[0])[0].name)
    with gr.Blocks(title="AdaCode restoration", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## AdaCode: image restoration with image-adaptive codebooks\n"
                    "Upload an image, choose the task and model, and press **Restore**. "
                    "The result downloads at the input's bit depth (16-bit PNG in, 16-bit "
                    "PNG out), as `adacode-restore` writes it.")
        c = {**_restore_panel(gr, engine), **_explorer_panel(gr, k0)}
        h = _handlers(gr, engine)
        outputs = [c[n] for n in ("slider", "lq_view", "out_view", "download", "maps_view",
                                  "stats_view", "status")]
        restore_inputs = [c["model"], c["upload"], c["editor"], c["books"]]
        c["task"].change(h["on_task"], c["task"], [c["model"], c["editor"]])
        c["model"].change(h["on_model"], c["model"], [c["books"], c["solo"]],
                          concurrency_id="device")
        c["upload"].change(h["on_upload"], c["upload"], [c["lq_view"], c["editor"], c["status"]])
        c["run"].click(h["restore_now"], restore_inputs, outputs, concurrency_id="device")
        c["books"].input(h["restore_now"], restore_inputs, outputs, concurrency_id="device")
        c["books"].input(lambda used, name: _solo_value(used, engine.num_codebooks(name)),
                         [c["books"], c["model"]], c["solo"], queue=False)  # keep the two switches in step
        c["solo"].input(h["solo_then_restore"], [c["solo"], c["model"], c["upload"], c["editor"]],
                        [c["books"]] + outputs, concurrency_id="device")
    # One network run at a time on the one device, whoever asks (queued, not refused).
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def launch(engine: Engine, *, host: str = "127.0.0.1", port: int | None = None,
           max_file_size: str = "200mb", block: bool = True):
    """Serve the page on ``host:port`` (localhost by default); files are served only from the
    app's temporary folder and Gradio's upload cache."""
    demo = build_ui(engine)
    return demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                       prevent_thread_lock=not block, show_error=True, quiet=False,
                       allowed_paths=[engine.workdir], max_file_size=max_file_size,
                       ssr_mode=False, run_history=False, footer_links=[], mcp_server=False)
