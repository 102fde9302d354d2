"""Stage I (paper §3.1): one VQGAN codebook per semantic class (FeMaSRNet,
docs/official.md#stage-i-network).

    python -m adacode_jax.main --config configs/stage1_codebook.py:portrait --workdir runs/s1_portrait
    --config configs/stage1_codebook.py:architecture,tiny     # CPU-sized variant
    --config configs/stage1_codebook.py:natural,compact       # the compact recipe (real photos)

Variants: one per class, with the paper's codebook sizes; ``all`` is one codebook over all the
data holding as many codes as the class codebooks together (the single-codebook baseline of
the paper's Table 1). Add ",tiny" for a CPU smoke run on the embedded images, or ",compact" for
the compact recipe on the real-photo corpus (``python -m adacode_jax.cli.corpus``; classes
architecture, natural, portrait and all; see docs/reproduction.md).
"""
from adacode_jax.configs import _base as config_lib

# One line for `adacode-train --help` (adacode_jax.resources.config_summaries).
VARIANTS = ("architecture | indoor | natural | street | portrait (default) | all; add ,tiny "
            "(CPU smoke run) or ,compact (real-photo recipe)")

# class -> (n_e, e_dim), the released basis codebooks c0..c3 + ffhq
# (docs/official.md#quantizer-and-codebooks)
CLASSES = {
    "architecture": (512, 256),   # c0
    "indoor": (256, 256),         # c1
    "natural": (512, 256),        # c2
    "street": (256, 256),         # c3
    "portrait": (256, 256),       # ffhq
    "all": (1792, 256),           # baseline: one codebook with the five's codes together
}
# The compact corpus has three classes (adacode_jax/tools/corpus_classes.csv); 256 codes of 64
# dimensions each, and the baseline holds their 768 codes in one book.
COMPACT_CLASSES = {"architecture": (256, 64), "natural": (256, 64), "portrait": (256, 64),
                   "all": (768, 64)}


def get_config(arg: str = "portrait"):
    parts = [p for p in (arg or "portrait").split(",") if p]
    cls = next((p for p in parts if p in CLASSES), "portrait")
    unknown = [p for p in parts if p not in CLASSES and p not in ("tiny", "compact")]
    if unknown:
        raise ValueError(f"unknown variant {unknown}; use one of {sorted(CLASSES)} and/or "
                         f"'tiny' or 'compact'")
    if "tiny" in parts and "compact" in parts:
        raise ValueError("choose one of 'tiny' and 'compact'")
    c = config_lib.base_config(stage=1, kind="stage1")
    c.model.codebooks = (CLASSES[cls],)
    c.model.use_semantic_loss = True          # stage I yaml: semantic loss on VGG19 relu4_4
    c.codebook_class = cls
    # One list file per class, written by python -m adacode_jax.cli.split_by_class.
    c.data.sources = [{"type": "folder", "list_file": f"data/category/{cls}.txt",
                       "weight": 1.0}]
    if "tiny" in parts:
        config_lib.make_tiny(c)
        c.model.codebooks = ((64 if CLASSES[cls][0] >= 512 else 32, 32),)
        c.model.use_semantic_loss = True
    if "compact" in parts:
        if cls not in COMPACT_CLASSES:
            raise ValueError(f"the compact corpus has no class {cls!r}; use one of "
                             f"{sorted(COMPACT_CLASSES)}")
        # The compact recipe's choices for this stage (docs/reproduction.md):
        # codebook_restart_every: re-place codes unused over the last 25 steps (a short run
        # otherwise leaves most of a fresh codebook dead).
        config_lib.make_compact(c, list_name=cls)
        c.model.codebooks = (COMPACT_CLASSES[cls],)
        c.model.use_semantic_loss = True
        c.train.num_steps = 800
        c.train.lr_g = 5e-4
        c.train.codebook_restart_every = 25
    return c
