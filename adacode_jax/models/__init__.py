"""AdaCode networks and the one place that builds them from an ml_collections config.

``model_config(kind)`` gives the official network of each kind:

=========  ====================================================  =======================
kind       official class                                        input -> output
=========  ====================================================  =======================
stage1     FeMaSRNet, one codebook (default 256 x 256)           256² -> 256²
stage2     AdaCodeSRNet, HQ reconstruction, K = 5 codebooks      256² -> 256²
sr_x4      AdaCodeSRNet_Contrast, LQ_stage, scale 4               64² -> 256²
sr_x2      AdaCodeSRNet_Contrast, LQ_stage, scale 2              128² -> 256²
inpaint    AdaCodeSRNet_Contrast, LQ_stage, scale 1              256² -> 256²
disc       UNetDiscriminatorSN(3, 64, skip_connection=True)      256² -> 256² logits
=========  ====================================================  =======================
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from adacode_jax.models.adacode import AdaCodeNet
from adacode_jax.models.discriminator import UNetDiscriminatorSN
from adacode_jax.models.layers import CHANNELS

# The released basis codebooks (n_e, e_dim), in checkpoint order
# (docs/official.md#quantizer-and-codebooks).
OFFICIAL_CODEBOOKS = ((512, 256), (256, 256), (512, 256), (256, 256), (256, 256))
GENERATOR_KINDS = ("stage1", "stage2", "sr_x4", "sr_x2", "inpaint")
KINDS = GENERATOR_KINDS + ("disc",)
RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_config(kind: str) -> ml_collections.ConfigDict:
    """The official network settings of ``kind`` (one of :data:`KINDS`) as a ConfigDict."""
    if kind not in KINDS:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {KINDS}")
    c = ml_collections.ConfigDict()
    c.kind = kind
    if kind == "disc":
        c.num_feat = 64            # base width of the U-Net discriminator
        c.skip_connection = True   # U-Net skips (Real-ESRGAN default)
        c.dtype = "float32"
        c.param_dtype = "float32"
        return c
    # (n_e, e_dim) per basis codebook, in checkpoint order.
    c.codebooks = ((256, 256),) if kind == "stage1" else OFFICIAL_CODEBOOKS
    # Output size / input size; 1 for the HQ networks and inpainting.
    c.scale_factor = {"sr_x4": 4, "sr_x2": 2}.get(kind, 1)
    c.lq_stage = kind in ("sr_x4", "sr_x2", "inpaint")   # stage III LQ encoder + shortcuts
    c.single_codebook = kind == "stage1"                  # FeMaSRNet layout, no weight predictor
    c.use_semantic_loss = False     # stage I conv_semantic head (VGG19 relu4_4 target)
    c.weight_softmax = False        # softmax over the K weight maps (off in the official code)
    c.use_residual = True           # LQ up-stage outputs added to decoder blocks 1 and 2
    c.gt_resolution = 256           # with codebook_scale: pyramid depth log2(256/32) = 3
    c.codebook_scale = 32
    c.channels = tuple(CHANNELS[r] for r in RESOLUTIONS)   # C[r] for r in 8 ... 512
    c.swin_dim = 256                # Swin embedding dim (must equal C[codebook_scale])
    c.swin_num_rstb = 4             # RSTBs per Swin stack
    c.swin_depth = 6                # Swin blocks per RSTB
    c.swin_heads = 8
    c.window_size = 8
    c.mlp_ratio = 4.0
    c.remat = False                 # rematerialise Swin and ResBlocks (memory for compute)
    c.dtype = "float32"             # compute dtype ("bfloat16" on accelerators)
    c.param_dtype = "float32"
    return c


def tiny_model_config(kind: str) -> ml_collections.ConfigDict:
    """A small network of the same structure for tests and the CPU demo (32 channels,
    one RSTB of two blocks, 64-code books of 32 dims)."""
    c = model_config(kind)
    if kind == "disc":
        c.num_feat = 16
        return c
    c.codebooks = ((64, 32),) if kind == "stage1" else ((64, 32), (32, 32))
    c.channels = (32,) * len(RESOLUTIONS)
    c.swin_dim = 32
    c.swin_num_rstb = 1
    c.swin_depth = 2
    c.swin_heads = 2
    return c


def compact_model_config(kind: str) -> ml_collections.ConfigDict:
    """The compact family: the official structure (encoder pyramid to 1/8, K = 3 basis
    codebooks, Swin weight predictor, decoder; for stage III the LQ encoder's Swin stack and
    decoder shortcuts) scaled so that each stage learns on a 2-core CPU in about an hour.

    Widths C[r] = 32 / 32 / 64 / 128 from the image level down to the 1/8 latent (official:
    32 / 64 / 128 / 256 / 256), one RSTB of two Swin blocks at width 128 with 4 heads and
    4 × 4 windows (official: 4 RSTBs of 6 blocks at 256, 8 heads, 8 × 8), and three 256 × 64
    codebooks (official: five of 256-512 codes × 256). The discriminator keeps its U-Net at
    num_feat 32 (official 64).
    """
    c = model_config(kind)
    if kind == "disc":
        c.num_feat = 32
        return c
    c.codebooks = ((256, 64),) if kind == "stage1" else ((256, 64),) * 3
    # C[r] for r in 8 ... 512 (keyed by the resolution a 256² image has at that level)
    c.channels = (128, 128, 128, 128, 64, 32, 32)
    c.swin_dim = 128
    c.swin_num_rstb = 1
    c.swin_depth = 2
    c.swin_heads = 4
    c.window_size = 4
    c.mlp_ratio = 2.0
    return c


def build_generator(cfg: ml_collections.ConfigDict) -> AdaCodeNet:
    """An :class:`AdaCodeNet` from a generator config (see :func:`model_config`)."""
    channels = list(cfg.channels)
    if len(channels) != len(RESOLUTIONS):
        raise ValueError(f"model.channels needs {len(RESOLUTIONS)} entries (for resolutions "
                         f"{RESOLUTIONS}), got {len(channels)}")
    if any(ch % 32 for ch in channels):
        raise ValueError(f"model.channels must be multiples of 32 (GroupNorm has 32 groups): "
                         f"{channels}")
    table = dict(zip(RESOLUTIONS, channels))
    if cfg.swin_dim != table[cfg.codebook_scale]:
        raise ValueError(f"model.swin_dim ({cfg.swin_dim}) must equal the channel count at the "
                         f"codebook level ({table[cfg.codebook_scale]})")
    return AdaCodeNet(
        codebooks=tuple(tuple(int(v) for v in cb) for cb in cfg.codebooks),
        scale_factor=int(cfg.scale_factor), lq_stage=bool(cfg.lq_stage),
        single_codebook=bool(cfg.single_codebook), use_semantic_loss=bool(cfg.use_semantic_loss),
        weight_softmax=bool(cfg.weight_softmax), use_residual=bool(cfg.use_residual),
        gt_resolution=int(cfg.gt_resolution), codebook_scale=int(cfg.codebook_scale),
        channels=tuple(table.items()), swin_dim=int(cfg.swin_dim),
        swin_num_rstb=int(cfg.swin_num_rstb), swin_depth=int(cfg.swin_depth),
        swin_heads=int(cfg.swin_heads), window_size=int(cfg.window_size),
        mlp_ratio=float(cfg.mlp_ratio), remat=bool(cfg.remat),
        dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype])


def build_discriminator(cfg: ml_collections.ConfigDict) -> UNetDiscriminatorSN:
    """A :class:`UNetDiscriminatorSN` from a discriminator config."""
    return UNetDiscriminatorSN(num_feat=int(cfg.num_feat), skip_connection=bool(cfg.skip_connection),
                               dtype=DTYPES[cfg.dtype], param_dtype=DTYPES[cfg.param_dtype])


def build(cfg: ml_collections.ConfigDict):
    """Generator or discriminator, by ``cfg.kind``."""
    return build_discriminator(cfg) if cfg.kind == "disc" else build_generator(cfg)


__all__ = ["AdaCodeNet", "UNetDiscriminatorSN", "model_config", "tiny_model_config",
           "compact_model_config",
           "build_generator", "build_discriminator", "build", "KINDS", "GENERATOR_KINDS",
           "OFFICIAL_CODEBOOKS"]
