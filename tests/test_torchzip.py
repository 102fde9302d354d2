"""The torch-free checkpoint reader against files written by the real ``torch.save``."""
import collections
import pickle

import ml_dtypes
import numpy as np
import pytest
import torch

from adacode_jax.inference import torchzip


def _state_dict():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    wide = torch.randn(3, 8, 5, generator=g)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(8, 3, 3, 3, generator=g)
    sd["transposed"] = base.t()                              # non-contiguous, shares storage with base
    sd["base"] = base
    sd["strided"] = wide[:, ::2, 1:4]                        # strided view with a storage offset
    sd["expanded"] = torch.arange(3.0).reshape(3, 1).expand(3, 4)  # stride 0 along one axis
    sd["half"] = torch.randn(5, generator=g).half()
    sd["bf16"] = torch.randn(5, generator=g).to(torch.bfloat16)
    sd["long"] = torch.arange(-3, 7, dtype=torch.int64).reshape(2, 5)
    sd["uint8"] = torch.arange(250, 256, dtype=torch.int32).to(torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    sd["uint16"] = torch.tensor([1, 60000], dtype=torch.int32).to(torch.uint16)  # _rebuild_tensor_v3
    sd["scalar"] = torch.tensor(3.5, dtype=torch.float64)
    sd["empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.ones(2, 2))
    sd["num_batches_tracked"] = torch.tensor(7)
    return sd


def _as_numpy(t):
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(ml_dtypes.bfloat16)
    if t.dtype == torch.uint16:
        return t.to(torch.int32).numpy().astype(np.uint16)
    return t.detach().numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_round_trip_matches_torch(tmp_path, zip_format):
    sd = _state_dict()
    if not zip_format:
        sd.pop("uint16")  # the legacy format predates the v3 dtypes
    path = tmp_path / "sd.pth"
    torch.save({"params": sd, "iter": 12}, path, _use_new_zipfile_serialization=zip_format)
    flat = torchzip.read_state_dict(path, key="params")
    assert list(flat) == list(sd)
    for name, tensor in sd.items():
        want = _as_numpy(tensor)
        got = flat[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert got.flags.c_contiguous, name
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=name)
    whole = torchzip.load(path)
    assert whole["iter"] == 12
    assert torchzip.flatten(whole)["params.base"].shape == (4, 6)
    with pytest.raises(KeyError, match="params_ema"):
        torchzip.read_state_dict(path, key="params_ema")


def test_legacy_storage_views_and_nested_lists(tmp_path):
    x = torch.arange(12.0)
    obj = {"layers": [x[2:5], x[6:].reshape(2, 3)], "meta": "text"}
    path = tmp_path / "legacy.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    flat = torchzip.read_state_dict(path)
    assert sorted(flat) == ["layers.0", "layers.1"]
    np.testing.assert_array_equal(flat["layers.0"], [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(flat["layers.1"], [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]])


def test_refuses_modules_and_non_torch_files(tmp_path):
    module_path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), module_path)
    with pytest.raises(pickle.UnpicklingError, match="torch.nn.modules.linear.Linear"):
        torchzip.load(module_path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="not a file written by torch.save"):
        torchzip.load(plain)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="not a file written by torch.save"):
        torchzip.load(noise)


def test_truncated_legacy_file_is_reported(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        torchzip.load(path)
