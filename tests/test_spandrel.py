"""Our .safetensors exports against the loader others use: spandrel (+ spandrel_extra_arches).

(a) Official-size networks (the reference's synthetic weights, tests/refweights.py) go through
our converter and our exporter, spandrel builds its torch model from the file, and that model's
output equals our Flax network's on the same input. (b) A network spandrel cannot represent (the
compact family) is still written, reads back exactly with our reader, and the export says, in
one line, that spandrel cannot load it and why; spandrel indeed refuses it.

Skipped only when spandrel is not installed (the `test` extra has it).
"""
from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from adacode_jax import models
from adacode_jax.cli import export as export_cli
from adacode_jax.inference import convert, safetensors_file
from adacode_jax.models import checkpointing
from tests import reference as ref
from tests.test_safetensors import random_checkpoint

torch = pytest.importorskip("torch", reason="torch comes with the `test` extra")


def _import_spandrel():
    """spandrel and its extra architectures, installed into spandrel's main registry.

    spandrel imports torchvision. torchvision 0.28.0 from PyPI is built against the CUDA
    torch 2.13.0; beside the CPU-only torch wheel its C ops do not load, and its import then
    fails registering fake kernels for two ops that do not exist (``torchvision::nms``,
    ``qnms``). spandrel's AdaCode and FeMaSR networks use no torchvision op, so the two
    schemas are declared and the import retried.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        sys.modules[__name__]._TORCHVISION_SCHEMAS = lib      # kept alive with this module
        import torchvision  # noqa: F401
    try:
        import spandrel
        import spandrel_extra_arches
    except ImportError:
        pytest.skip("spandrel comes with the `test` extra", allow_module_level=True)
    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel


spandrel = _import_spandrel()


def _separated_codebooks(cfg, variables, f: np.ndarray):
    """``variables`` with codebooks whose first codes are the very features ``f`` (1, h, w, C)
    quantises (``before_quant_group.k`` of ``f``), one code per latent position, and the other
    codes far away: each argmin is a distance of about zero against the smallest distance
    between two features, so the float differences between torch and XLA cannot flip it
    (random codes, or the official uniform(±1/n) init, leave near-ties)."""
    params = dict(variables["params"])
    rows = f.reshape(-1, f.shape[-1]).astype(np.float64)
    rng = np.random.default_rng(7)
    for k, (n_e, e_dim) in enumerate(cfg.codebooks):
        conv = params[f"before_quant_group.{k}"]
        z = rows @ np.asarray(conv["kernel"], np.float64)[0, 0] + np.asarray(conv["bias"])
        pair = ((z[:, None] - z[None]) ** 2).sum(-1) + np.diag(np.full(len(z), np.inf))
        assert pair.min() > 1e-2 * (z ** 2).sum(-1).mean(), "two latent features nearly equal"
        far = rng.standard_normal((n_e, e_dim))
        radius = 10 * np.linalg.norm(z - z.mean(0), axis=1).max()
        codes = z.mean(0) + far / np.linalg.norm(far, axis=1, keepdims=True) * radius
        codes[: len(z)] = z
        params[f"quantize_group.{k}"] = {"embedding": jax.numpy.asarray(codes, np.float32)}
    return {**variables, "params": params}


def _torch_output(path: str, x: np.ndarray, arch: str, scale: int) -> np.ndarray:
    """The network spandrel loads from ``path`` run on ``x`` (NHWC), as NHWC; its model itself,
    not the descriptor's __call__ (which clamps to [0, 1])."""
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert descriptor.architecture.id == arch and descriptor.scale == scale
    with torch.no_grad():
        y = descriptor.model.eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    return y.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("kind, side, arch", [("sr_x4", 16, "AdaCode"), ("stage1", 32, "FeMaSR")])
def test_official_network_through_spandrel_equals_ours(kind, side, arch, tmp_path):
    cfg, variables = convert.to_variables(ref.state_dict(kind), kind)
    model = models.build(cfg)
    forward = jax.jit(model.apply)
    x = np.random.default_rng(3).random((1, side, side, 3), dtype=np.float32)
    _, aux = forward(variables, x)
    variables = _separated_codebooks(cfg, variables, np.asarray(aux["feat_before_quant"]))
    ours, aux = forward(variables, x)
    ours = np.asarray(ours)
    n = aux["feat_before_quant"].shape[1] * aux["feat_before_quant"].shape[2]
    for k in range(len(cfg.codebooks)):            # each position picks its own code
        np.testing.assert_array_equal(np.asarray(aux["indices"][k]).ravel(), np.arange(n))
    path = str(tmp_path / f"{kind}.safetensors")
    safetensors_file.export(path, cfg, variables, {"source": "tests/refweights.py"})

    theirs = _torch_output(path, x, arch, int(cfg.scale_factor))
    scale = int(cfg.scale_factor)
    assert theirs.shape == ours.shape == (1, side * scale, side * scale, 3)
    assert np.abs(ours).max() > 1.0                   # a real signal, not a flat image
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-3)


def test_a_network_spandrel_cannot_represent_is_written_and_named(tmp_path, capsys):
    cfg = models.compact_model_config("sr_x4")
    ckpt = random_checkpoint(tmp_path, "sr_x4", cfg=cfg)
    path = tmp_path / "compact.safetensors"
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt, "--output", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("exported sr_x4 (256x64,256x64,256x64) to ") and len(out.splitlines()) == 1
    (line,) = err.splitlines()
    assert line.startswith(f"warning: spandrel cannot load {path} (spandrel 0.4.2 + "
                           "spandrel_extra_arches 0.2.0): its AdaCode architecture hard-codes ")
    assert "swin_dim=128 (spandrel: 256)" in line and "window_size=4 (spandrel: 8)" in line
    # our reader gives back exactly what was exported
    cfg0, variables0, _ = checkpointing.load_inference(ckpt)
    cfg1, variables1, _ = convert.load_file(str(path), "sr_x4")
    assert cfg1.to_dict() == cfg0.to_dict() and cfg1.swin_dim == 128
    for a, b in zip(jax.tree.leaves(variables0), jax.tree.leaves(variables1)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # and spandrel, which builds the official sizes, refuses the file rather than misreading it
    with pytest.raises(RuntimeError, match="size mismatch"):
        spandrel.ModelLoader().load_from_file(str(path))
