"""Stage I (paper §3.1): one VQGAN codebook per semantic class (FeMaSRNet, spec §5).

    python -m adacode_jax.main --config configs/stage1_codebook.py:portrait --workdir runs/s1_portrait
    --config configs/stage1_codebook.py:architecture,tiny     # CPU-sized variant

Variants: one per class, with the paper's codebook sizes; add ",tiny" for a CPU run.
"""
from adacode_jax import config_lib

# class -> (n_e, e_dim), the released basis codebooks c0..c3 + ffhq (spec §1)
CLASSES = {
    "architecture": (512, 256),   # c0
    "indoor": (256, 256),         # c1
    "natural": (512, 256),        # c2
    "street": (256, 256),         # c3
    "portrait": (256, 256),       # ffhq
}


def get_config(arg: str = "portrait"):
    parts = [p for p in (arg or "portrait").split(",") if p]
    cls = next((p for p in parts if p in CLASSES), "portrait")
    unknown = [p for p in parts if p not in CLASSES and p != "tiny"]
    if unknown:
        raise ValueError(f"unknown variant {unknown}; use one of {sorted(CLASSES)} and/or 'tiny'")
    c = config_lib.base_config(stage=1, kind="stage1")
    c.model.codebooks = (CLASSES[cls],)
    c.model.use_semantic_loss = True          # stage I yaml: semantic loss on VGG19 relu4_4
    c.codebook_class = cls
    # One list file per class, written by python -m adacode_jax.data.split_by_class.
    c.data.sources = [{"type": "folder", "list_file": f"data/category/{cls}.txt",
                       "weight": 1.0}]
    if "tiny" in parts:
        config_lib.make_tiny(c)
        c.model.codebooks = ((64 if CLASSES[cls][0] == 512 else 32, 32),)
        c.model.use_semantic_loss = True
    return c
