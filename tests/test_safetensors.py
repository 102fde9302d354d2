"""Official-layout .safetensors files (adacode-export --format safetensors): Orbax -> safetensors
-> Orbax bit for bit for every kind, the header and the official buffers in the file, strict
reading, damaged files, and the readers that take a .pth taking them too."""
from __future__ import annotations

import json
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from adacode_jax import models
from adacode_jax.cli import convert as convert_cli
from adacode_jax.cli import export as export_cli
from adacode_jax.inference import convert, safetensors_file, spandrel_check
from adacode_jax.inference import restorer as restore
from adacode_jax.models import checkpointing
from adacode_jax.models.swin import relative_position_index, shifted_window_mask
from tests import reference as ref

# Derived buffers in a tiny network's file: per Swin stack (1 RSTB of 2 blocks) two
# relative_position_index and one attn_mask; stage II the weight predictor's stack, stage III
# also the LQ encoder's, and contrast_cri.temperature and .negatives_mask.
BUFFERS = {"stage1": 0, "stage2": 3, "sr_x4": 6 + 2, "sr_x2": 6 + 2, "inpaint": 6 + 2, "disc": 0}
NEGATIVES = {"sr_x4": 16, "sr_x2": 16, "inpaint": 4}      # 2B of the release
# Keys of the released files (docs/official.md#official-checkpoints; stage I was not released).
RELEASED_KEYS = {"stage2": 495, "disc": 28, "sr_x2": 871, "sr_x4": 853, "inpaint": 889}


def random_checkpoint(folder, kind, cfg=None, extra=None) -> str:
    """An Orbax inference checkpoint of ``cfg`` (default the tiny ``kind``) with N(0, 1)
    variables in every collection (the discriminator's spectral u, v too)."""
    cfg = cfg or models.tiny_model_config(kind)
    side = {"sr_x4": 64, "sr_x2": 128}.get(kind, 256)
    x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    shapes = jax.eval_shape(models.build(cfg).init, jax.random.key(0), x)
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    variables = {c: jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), t)
                 for c, t in shapes.items() if c != "intermediates"}
    return checkpointing.save_inference(str(folder / kind), cfg, variables, extra=extra)


def _assert_same(a, b):
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert x.tobytes() == y.tobytes(), path


@pytest.fixture(scope="module")
def sr4_file(tmp_path_factory):
    """A tiny sr_x4 checkpoint and its export."""
    tmp = tmp_path_factory.mktemp("sr4")
    ckpt = random_checkpoint(tmp, "sr_x4")
    out = tmp / "sr_x4.safetensors"
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt, "--output", str(out)]) == 0
    return ckpt, str(out)


@pytest.mark.parametrize("kind", models.KINDS)
def test_orbax_safetensors_orbax_is_bit_exact(kind, tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path, kind)
    out = tmp_path / f"{kind}.safetensors"
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt, "--output", str(out)]) == 0
    assert convert_cli.main(["--kind", kind, "--input", str(out), "--output", str(tmp_path / "back")]) == 0
    cfg, variables, _ = checkpointing.load_inference(ckpt)
    cfg2, variables2, meta2 = checkpointing.load_inference(str(tmp_path / "back"))
    _assert_same(variables, variables2)
    assert cfg2.to_dict() == cfg.to_dict() and meta2["kind"] == kind

    tensors, header = safetensors_file.read(str(out))
    params = convert.to_state_dict(variables)
    assert len(tensors) - len(params) == BUFFERS[kind]
    assert header["kind"] == kind and header["format"] == "pt"
    assert json.loads(header["model"]) == cfg.to_dict()
    if kind == "disc":
        assert "scale" not in header and "codebooks" not in header
        # spectral norm: kernel -> weight_orig (OIHW), u/v -> weight_u/weight_v
        k = np.asarray(variables["params"]["conv1"]["kernel"])
        np.testing.assert_array_equal(tensors["conv1.weight_orig"], k.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(tensors["conv1.weight_u"], variables["spectral"]["conv1"]["u"])
    else:
        assert header["scale"] == {"sr_x4": "4", "sr_x2": "2"}.get(kind, "1")
        assert header["codebooks"] == ("64x32" if kind == "stage1" else "64x32,32x32")
        k = np.asarray(variables["params"]["out_conv"]["kernel"])          # HWIO (3, 3, 32, 3)
        assert tensors["out_conv.weight"].shape == (3, 32, 3, 3)
        np.testing.assert_array_equal(tensors["out_conv.weight"], k.transpose(3, 2, 0, 1))
    if kind in NEGATIVES:
        n = NEGATIVES[kind]
        np.testing.assert_array_equal(tensors["contrast_cri.negatives_mask"], 1 - np.eye(n))
        assert tensors["contrast_cri.temperature"].shape == () and tensors["contrast_cri.temperature"] == 0.5
    if kind in ("stage2",) + tuple(NEGATIVES):
        block = "weight_predictor.blocks.0.swin_blks.0.residual_group.blocks."
        rpi = tensors[block + "0.attn.relative_position_index"]
        assert rpi.dtype == np.int64 and rpi.shape == (64, 64) and rpi.max() == 224
        np.testing.assert_array_equal(rpi, relative_position_index(8))
        mask = tensors[block + "1.attn_mask"]      # the official 32 x 32 grid: 16 windows of 8 x 8
        assert mask.shape == (16, 64, 64) and block + "0.attn_mask" not in tensors
        np.testing.assert_array_equal(mask, shifted_window_mask(32, 32, 8, 4))
        assert set(np.unique(mask)) == {0.0, -100.0}
    assert "warning: spandrel cannot load" in capsys.readouterr().err


@pytest.mark.parametrize("kind", models.KINDS)
def test_official_buffers_are_those_of_the_official_files(kind):
    """Names, shapes and dtypes of the derived buffers we write for the official networks are
    those of the official key listings (keys/<kind>.tsv; stage II's listing is of the _Contrast
    class, whose contrast_cri the released AdaCodeSRNet file does not have)."""
    rows = ref.weights_module().read_keys(kind)
    params = [r["key"] for r in rows if r["source"] == "generated"]
    ours = convert.official_buffers(params, kind, 8)
    want = {r["key"]: (r["shape"], r["dtype"]) for r in rows if r["source"] == "model"
            and not (kind == "stage2" and r["key"].startswith("contrast_cri."))}
    assert {k: (v.shape, str(v.dtype)) for k, v in ours.items()} == want
    if kind in RELEASED_KEYS:
        assert len(params) + len(ours) == RELEASED_KEYS[kind]


def test_header_says_training_data_and_licence(tmp_path):
    ckpt = random_checkpoint(tmp_path, "disc", extra={"training_data": "12 photos of cats",
                                                      "licence": "CC-BY-4.0"})
    out = tmp_path / "d.safetensors"
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt, "--output", str(out)]) == 0
    header = safetensors_file.read_metadata(str(out))
    assert header["training_data"] == "12 photos of cats" and header["license"] == "CC-BY-4.0"
    assert header["source"] == ckpt


def test_model_card_beside_a_checkpoint_fills_the_header(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "MODEL_CARD.md").write_text(
        "# a model (`mine`)\n\n- **Network**: tiny\n- **Data**: 168 photos from Debian\n"
        "  packages, GPL-2+\n- **Licence**: Apache-2.0\n\n## Metrics\n")
    assert safetensors_file.provenance(str(tmp_path / "mine"), {}) == {
        "training_data": "168 photos from Debian packages, GPL-2+", "license": "Apache-2.0"}
    # a card beside the folder that is about another model is not used; model.json comes first
    assert safetensors_file.provenance(str(tmp_path / "other"), {}) == {}
    assert safetensors_file.provenance(str(tmp_path / "mine"), {"license": "MIT"})["license"] == "MIT"


def test_reading_is_as_strict_as_for_pth(sr4_file, tmp_path):
    _, path = sr4_file
    tensors, header = safetensors_file.read(path)
    bad = dict(tensors)
    del bad["out_conv.bias"]
    bad["decoder_group.0.block.1.weight"] = bad["decoder_group.0.block.1.weight"][:, :16]
    bad["mystery.weight"] = np.zeros(3, np.float32)
    mask = "weight_predictor.blocks.0.swin_blks.0.residual_group.blocks.1.attn_mask"
    bad[mask] = np.zeros_like(bad[mask])
    broken = tmp_path / "broken.safetensors"
    save_file(bad, str(broken), metadata=header)
    with pytest.raises(convert.ConversionError) as e:
        convert.load_file(str(broken), "sr_x4")
    msg = str(e.value)
    assert "1 missing keys" in msg and "out_conv.bias" in msg
    assert "1 unexpected keys" in msg and "mystery.weight" in msg
    assert "1 mis-shaped keys" in msg and "file (32, 16, 3, 3), network (32, 32, 3, 3)" in msg
    assert "1 derived buffers that disagree" in msg and "attn_mask: differs" in msg
    with pytest.raises(convert.ConversionError, match=r"holds a 'sr_x4' network, not 'sr_x2'"):
        convert.load_file(path, "sr_x2")


def test_a_file_without_our_header_is_read_as_official(tmp_path):
    """A safetensors file from elsewhere (no header): the official network of the asked kind."""
    sd = ref.state_dict("disc")
    path = tmp_path / "disc.safetensors"
    save_file(sd, str(path))
    cfg, variables, n = convert.load_file(str(path), "disc")
    _, direct = convert.to_variables(sd, "disc")
    assert n == len(sd) == 28 and cfg.num_feat == 64
    _assert_same(variables, direct)


@pytest.mark.parametrize("cut", [0.0005, 0.5, 0.999])
def test_a_truncated_file_is_one_line_naming_it(sr4_file, tmp_path, cut, capsys):
    _, path = sr4_file
    data = open(path, "rb").read()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:int(len(data) * cut)])
    pattern = rf"^{re.escape(str(bad))}: not a readable safetensors file \(.*\); check that it is"
    with pytest.raises(convert.ConversionError, match=pattern) as e:
        convert.read_state_dict(str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(convert.ConversionError, match=pattern):
        restore.load_network(str(bad))
    assert convert_cli.main(["--kind", "sr_x4", "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not a readable safetensors file") and "\n" not in err


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(convert.ConversionError, match=rf"^{re.escape(str(bad))}: not a readable"):
        convert.read_state_dict(str(bad))


def test_restorer_takes_the_file_and_its_kind_from_the_header(sr4_file):
    ckpt, path = sr4_file
    cfg, params, source = restore.load_network(path)
    cfg0, variables0, _ = checkpointing.load_inference(ckpt)
    assert cfg.kind == "sr_x4" and source == path and cfg.swin_dim == 32
    _assert_same(params, {"params": variables0["params"]})
    assert restore.requested_kind(path, "sr", None) is None        # the header decides
    r = restore.Restorer.from_checkpoint(path, "sr")
    assert r.scale == 4 and r.description == f"sr_x4 from {path}"
    with pytest.raises(ValueError, match=r"holds a 'sr_x4' network, but 'inpaint' was asked"):
        restore.load_network(path, task="inpaint")
    with pytest.raises(convert.ConversionError, match=r"not 'sr_x2'"):
        restore.load_network(path, "sr_x2")
    from adacode_jax.app import webapp

    assert webapp.parse_model(f"mine={path}").kind == "sr_x4"      # no :KIND needed


def test_export_refuses_what_it_cannot_write(sr4_file, tmp_path, capsys):
    ckpt, path = sr4_file
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt,
                            "--output", str(tmp_path / "x.pth")]) == 2
    assert "ending in .safetensors" in capsys.readouterr().err
    assert export_cli.main(["--format", "safetensors", "--checkpoint", ckpt, "--shape", "64x64",
                            "--output", str(tmp_path / "x.safetensors")]) == 2
    assert "--shape: only for --format jax" in capsys.readouterr().err
    assert export_cli.main(["--format", "safetensors", "--checkpoint", path,
                            "--output", str(tmp_path / "y.safetensors")]) == 2
    assert "not an inference checkpoint folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_spandrel_check_names_what_spandrel_hard_codes():
    for kind in models.GENERATOR_KINDS:
        assert spandrel_check.problems(models.model_config(kind)) == [], kind
    compact = spandrel_check.problems(models.compact_model_config("sr_x4"))
    assert compact == ["channels=(128, 128, 128, 128, 64, 32, 32) (spandrel: (256, 256, 256, 256, 128, 64, 32))",
                       "swin_dim=128 (spandrel: 256)", "swin_num_rstb=1 (spandrel: 4)",
                       "swin_depth=2 (spandrel: 6)", "swin_heads=4 (spandrel: 8)",
                       "window_size=4 (spandrel: 8)", "mlp_ratio=2.0 (spandrel: 4.0)"]
    # what spandrel would load without complaint but compute differently
    cfg = models.model_config("sr_x2")
    cfg.use_residual, cfg.weight_softmax = False, True
    assert spandrel_check.problems(cfg) == ["weight_softmax=True (spandrel: False)",
                                            "use_residual=False (spandrel: True)"]
    cfg = models.model_config("stage2")
    cfg.use_residual = False                       # no LQ shortcuts in stage II: nothing changes
    assert spandrel_check.problems(cfg) == []
    line = spandrel_check.message("d.safetensors", models.model_config("disc"))
    assert line.startswith("spandrel cannot load d.safetensors (spandrel 0.4.2") and "'disc'" in line
