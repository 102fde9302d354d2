"""The checkpoint converter on real files: torch-saved .pth, flat .npz, strictness, the CLI."""
from __future__ import annotations

import os
import re

import jax
import numpy as np
import pytest

from adacode_jax.cli import convert as convert_cli
from adacode_jax.models import checkpointing
from adacode_jax.inference import convert
from adacode_jax.models.swin import relative_position_index, shifted_window_mask
from tests import reference as ref

torch = pytest.importorskip("torch", reason="torch comes with the `test` extra")


def _official_buffers(sd: dict, batch_size: int) -> dict:
    """Add the derived buffers an official checkpoint carries (keys/<kind>.tsv, source=model)."""
    out = dict(sd)
    for k in sd:
        if k.endswith(".attn.relative_position_bias_table"):
            base = k[: -len(".attn.relative_position_bias_table")]
            out[base + ".attn.relative_position_index"] = relative_position_index(8).astype(np.int64)
            if int(base.rsplit(".", 1)[1]) % 2 == 1:
                out[base + ".attn_mask"] = shifted_window_mask(32, 32, 8, 4)
    out["contrast_cri.temperature"] = np.array(0.5, np.float32)
    out["contrast_cri.negatives_mask"] = (1 - np.eye(2 * batch_size)).astype(np.float32)
    return out


def _save_pth(path, sd):
    torch.save({"params": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}}, path)


def test_official_buffers_match_the_key_listing():
    """Our recomputed buffers have the official names and shapes (keys/sr_x4.tsv)."""
    rows = {r["key"]: r for r in ref.weights_module().read_keys("sr_x4")}
    full = _official_buffers(ref.state_dict("sr_x4"), batch_size=8)
    assert set(full) == set(rows)
    for k, v in full.items():
        assert tuple(v.shape) == rows[k]["shape"], k


def test_pth_with_buffers_roundtrips_through_the_cli(tmp_path):
    """A torch-saved {'params': ...} .pth -> Orbax dir -> same network output as in memory."""
    sd = _official_buffers(ref.state_dict("stage2"), batch_size=2)
    pth = tmp_path / "AdaCode_S2_model_g.pth"
    _save_pth(pth, sd)
    out_dir = tmp_path / "ckpt"
    assert convert_cli.main(["--kind", "stage2", "--input", str(pth), "--output", str(out_dir)]) == 0
    cfg, variables, meta = checkpointing.load_inference(str(out_dir))
    assert meta["kind"] == "stage2"
    assert [list(c) for c in cfg.codebooks] == [[512, 256], [256, 256], [512, 256], [256, 256], [256, 256]]
    model, direct = convert.load_official(sd, "stage2")
    flat_a, flat_b = jax.tree.leaves(direct), jax.tree.leaves(variables)
    assert len(flat_a) == len(flat_b)
    for a, b in zip(flat_a, flat_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The inverse mapping gives back the official tensors exactly.
    back = convert.to_state_dict(variables)
    for k, v in ref.state_dict("stage2").items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_npz_and_dict_inputs_agree(tmp_path):
    sd = ref.state_dict("disc")
    npz = tmp_path / "disc.npz"
    np.savez(npz, **sd)
    _, v1 = convert.load_official(str(npz), "disc")
    _, v2 = convert.load_official(sd, "disc")
    for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # spectral-norm state is taken from the file, not recomputed
    np.testing.assert_array_equal(np.asarray(v1["spectral"]["conv3"]["u"]), sd["conv3.weight_u"])


def test_codebook_list_is_read_from_the_file():
    sd = dict(ref.state_dict("stage1"))
    sd["quantize_group.0.embedding.weight"] = np.zeros((512, 256), np.float32)
    cfg = convert.infer_config(sd, "stage1")
    assert [list(c) for c in cfg.codebooks] == [[512, 256]]


def test_strict_refusal_lists_every_problem_by_name():
    sd = dict(ref.state_dict("stage1"))
    del sd["out_conv.bias"]
    sd["decoder_group.0.block.1.weight"] = sd["decoder_group.0.block.1.weight"][:, :128]
    sd["mystery.weight"] = np.zeros(3, np.float32)
    with pytest.raises(convert.ConversionError) as e:
        convert.to_variables(sd, "stage1")
    msg = str(e.value)
    assert "1 missing keys" in msg and "out_conv.bias" in msg
    assert "1 unexpected keys" in msg and "mystery.weight" in msg
    assert "1 mis-shaped keys" in msg and "decoder_group.0.block.1.weight" in msg
    assert "file (256, 128, 3, 3), network (256, 256, 3, 3)" in msg


def test_non_strict_keeps_init_for_missing_but_never_accepts_bad_shapes():
    sd = dict(ref.state_dict("stage1"))
    del sd["out_conv.bias"]
    sd["extra.weight"] = np.zeros(1, np.float32)
    _, variables = convert.to_variables(sd, "stage1", strict=False)
    assert variables["params"]["out_conv"]["bias"].shape == (3,)
    sd["out_conv.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    with pytest.raises(convert.ConversionError, match="out_conv.weight"):
        convert.to_variables(sd, "stage1", strict=False)


def test_derived_buffers_are_checked_not_trusted():
    sd = _official_buffers(ref.state_dict("sr_x4"), batch_size=8)
    convert.to_variables(sd, "sr_x4")           # correct buffers pass
    key = "weight_predictor.blocks.0.swin_blks.2.residual_group.blocks.3.attn_mask"
    bad = dict(sd)
    bad[key] = np.zeros_like(sd[key])
    with pytest.raises(convert.ConversionError, match="attn_mask: differs"):
        convert.to_variables(bad, "sr_x4")
    bad = dict(sd)
    bad["contrast_cri.temperature"] = np.array(0.07, np.float32)
    with pytest.raises(convert.ConversionError, match="temperature"):
        convert.to_variables(bad, "sr_x4")


def test_wrong_kind_is_refused_with_shapes():
    with pytest.raises(convert.ConversionError, match="multiscale_encoder.in_conv.weight"):
        convert.to_variables(ref.state_dict("sr_x2"), "sr_x4")


def test_cli_reports_missing_file(tmp_path, capsys):
    rc = convert_cli.main(["--kind", "sr_x4", "--input", str(tmp_path / "nope.pth"),
                       "--output", str(tmp_path / "o")])
    assert rc == 2
    assert "nope.pth" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_a_truncated_npz_is_named(tmp_path, cut):
    """Cut in the middle (no central directory: BadZipFile) or near the end."""
    full = tmp_path / "full.npz"
    np.savez_compressed(full, **{"a.weight": np.arange(4096, dtype=np.float32)})
    data = full.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(convert.ConversionError, match=rf"^{re.escape(str(bad))}: .*; check that it "
                                                      r"is a complete file"):
        convert.read_state_dict(str(bad))
