"""The compiled data-parallel train step: what it communicates, and that it donates its state.

The step is compiled exactly as training compiles it (``networks.jit_train_step``) for the tiny
stage III x4 config on an 8-device data-parallel mesh, and its HLO is read by
:mod:`adacode_jax.tools.comm_report`.
"""
from __future__ import annotations

import re

import jax
import pytest

from adacode_jax.tools import comm_report
from adacode_jax.training import steps
from tests.test_train import get_config

HLO = """
HloModule m, input_output_alias={ {0}: (0, {}, may-alias) }
  %all-reduce.1 = (f32[3,3,32,32]{3,2,1,0}, f32[32]{0}) all-reduce(%a, %b), channel_id=1, replica_groups=[1,8]<=[8], to_apply=%add, metadata={op_name="jit(step)/transpose(jvp(conv))"}
  %reduce-scatter.2 = f32[4,32]{1,0} reduce-scatter(%c), channel_id=2, replica_groups={{0,1},{2,3},{4,5},{6,7}}, dimensions={0}, to_apply=%add
  %all-gather-start.3 = (f32[2,16]{1,0}, f32[16,16]{1,0}) all-gather-start(%d), channel_id=3, replica_groups=[1,8]<=[8], dimensions={0}
  %all-gather-done.3 = f32[16,16]{1,0} all-gather-done(%all-gather-start.3)
  ROOT %t = (f32[]) tuple(%x)
"""


def test_hlo_parser_counts_bytes_per_collective():
    ops = comm_report.collectives(HLO)
    assert [o["kind"] for o in ops] == ["all-reduce", "reduce-scatter", "all-gather"]
    assert ops[0]["bytes"] == (9 * 32 * 32 + 32) * 4 and ops[0]["group"] == 8
    assert ops[0]["op_name"] == "jit(step)/transpose(jvp(conv))"
    assert ops[1]["bytes"] == 4 * 32 * 4 * 2             # the input of a reduce-scatter by 2
    assert ops[2]["bytes"] == 16 * 16 * 4 and ops[2]["shapes"] == ["f32[16, 16]"]


@pytest.fixture(scope="module")
def tiny_dp():
    assert jax.device_count() == 8
    c = get_config("stage3_sr", "x4,tiny")
    c.mesh.num_devices, c.mesh.data, c.mesh.fsdp = 8, -1, 1
    c.data.batch_size = 8
    compiled, abstract, nets = comm_report.compile_step(c, 8)
    text = compiled.as_text()
    ops = comm_report.collectives(text)
    summary = comm_report.summarize(ops, comm_report.param_bytes(abstract, nets.frozen))
    return c, text, ops, summary, abstract


def _contrastive_feature_bytes(c) -> int:
    """[f; f̂] at the global batch: (2B, h, w, C) float32."""
    grid = c.data.crop_size // 8                     # GT crop / codebook grid of the :tiny nets
    return 2 * c.data.batch_size * grid * grid * c.model.swin_dim * 4


def test_data_parallel_reduces_about_the_trainable_bytes(tiny_dp):
    """Every trainable gradient is all-reduced once (D's two calls of the D step run as one
    batch, so its gradients are summed before they are sent); the extras are known and
    bounded: the relative-position-bias gradients before their scatter into the tables
    (heads x N² per trainable Swin block) and the gradient of the gathered InfoNCE features
    ([f; f̂] at the global batch, summed over devices before each takes its slice)."""
    c, _, _, rep, _ = tiny_dp
    pb = rep["param_bytes"]
    assert "reduce-scatter" not in rep["collectives"]
    assert rep["reduce_bytes_over_trainable"] >= 0.99
    m = c.model
    swin_blocks = 2 * m.swin_num_rstb * m.swin_depth           # LQ encoder + weight predictor
    bias = swin_blocks * m.swin_heads * m.window_size ** 4 * 4
    bound = pb["trainable"] + bias + _contrastive_feature_bytes(c)
    assert rep["collectives"]["all-reduce"]["bytes"] <= 1.01 * bound
    assert pb["generator_trainable"] < pb["generator"]  # frozen modules send nothing


def test_no_activation_is_gathered_except_the_contrastive_features(tiny_dp):
    """InfoNCE compares every sample with every other, so [f; f̂] (2B, h, w, C) crosses the
    devices; images, decoder activations and weight maps stay where they are."""
    c, _, ops, rep, _ = tiny_dp
    features = _contrastive_feature_bytes(c)
    moved = [o for o in ops if o["kind"] not in ("all-reduce", "reduce-scatter")]
    assert moved and max(o["bytes"] for o in moved) <= features
    total = sum(v["bytes"] for k, v in rep["collectives"].items()
                if k not in ("all-reduce", "reduce-scatter"))
    assert total <= 3 * features


def test_the_step_donates_its_state(tiny_dp):
    """``donate_argnums=(0,)``: every state leaf the step updates is written into a donated
    input buffer. (Frozen generator leaves come back as the very input buffers, so the
    donated buffers outnumber the outputs that need one.)"""
    c, text, _, _, abstract = tiny_dp
    header = text[: text.index("\n")]
    aliased = set(re.findall(r"\((\d+), \{\}, may-alias\)", header))
    _, frozen = steps.split_params(abstract.g_params, tuple(c.train.frozen))
    assert len(aliased) >= len(jax.tree.leaves(abstract)) - len(jax.tree.leaves(frozen))
