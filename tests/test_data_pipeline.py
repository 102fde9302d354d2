"""The Grain pipeline end to end: shapes per task, determinism with 0 and 2 workers, exact
resume (JSON and Orbax), bad files, two hosts, mixing, TFDS, paired folders, global arrays."""
import logging
import os

import cv2
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import skimage
import tensorflow_datasets as tfds

from adacode_jax import images as io
from adacode_jax.data import iterator_state
from adacode_jax.data import pipeline

SKIMAGE_DATA = os.path.join(os.path.dirname(skimage.__file__), "data")
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "logo.png"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Real photographs, shrunk to ~120 px (fast to read), plus grey and RGBA ones."""
    d = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        img = cv2.imread(os.path.join(SKIMAGE_DATA, name), cv2.IMREAD_UNCHANGED)
        f = 120 / min(img.shape[:2])
        small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(d / (os.path.splitext(name)[0] + ".png")), small)
    return str(d)


@pytest.fixture(scope="module")
def photo_dir_with_bad(tmp_path_factory, photo_dir):
    d = tmp_path_factory.mktemp("with_bad")
    for f in os.listdir(photo_dir):
        os.symlink(os.path.join(photo_dir, f), d / f)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (d / "empty.jpg").write_bytes(b"")
    return str(d)


def _config(path, **kw):
    c = pipeline.default_data_config()
    c.sources = [{"type": "folder", "path": path}]
    c.crop_size = 64
    c.batch_size = 4
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k


@pytest.mark.parametrize("task,scale,shapes", [
    ("recon", 4, {"gt": (4, 64, 64, 3)}),
    ("sr", 4, {"gt": (4, 64, 64, 3), "lq": (4, 16, 16, 3)}),
    ("sr", 2, {"gt": (4, 64, 64, 3), "lq": (4, 32, 32, 3)}),
    ("inpaint", 4, {"gt": (4, 64, 64, 3), "lq": (4, 64, 64, 3), "mask": (4, 64, 64, 1)}),
])
def test_batches_have_fixed_shapes(photo_dir, task, scale, shapes):
    it = pipeline.make_iterator(_config(photo_dir, task=task, scale=scale))
    for batch in _take(it, 2):
        assert {k: v.shape for k, v in batch.items()} == {**shapes, "skipped": (4,)}
        for k in shapes:
            assert batch[k].dtype == np.float32 and batch[k].min() >= 0 and batch[k].max() <= 1
    it.close()


def test_same_seed_same_batches_and_exact_resume_with_0_and_2_workers(photo_dir_with_bad, tmp_path):
    cfg0 = _config(photo_dir_with_bad, task="sr", scale=4, seed=3)
    it0 = pipeline.make_iterator(cfg0)
    ref = _take(it0, 5)
    it0.close()
    assert sum(int(b["skipped"].sum()) for b in ref) >= 2  # both bad files were met and dropped
    again = pipeline.make_iterator(cfg0)
    _assert_same(_take(again, 5), ref)
    other = next(pipeline.make_iterator(_config(photo_dir_with_bad, task="sr", scale=4, seed=4)))
    assert other["gt"].tobytes() != ref[0]["gt"].tobytes()

    # 0 workers: state after batch 2 -> JSON -> a fresh iterator continues with batch 3.
    again = pipeline.make_iterator(cfg0)
    _take(again, 2)
    iterator_state.save_state_json(str(tmp_path / "w0"), again, 0, 1)
    again.close()
    resumed = iterator_state.make_resumable_iterator(cfg0, str(tmp_path / "w0"),
                                                     shard_options=grain.sharding.ShardOptions(0, 1))
    _assert_same(_take(resumed, 3), ref[2:])

    # 2 worker processes: byte-identical batches, and an exact resume through Orbax.
    cfg2 = _config(photo_dir_with_bad, task="sr", scale=4, seed=3, worker_count=2)
    it2 = pipeline.make_iterator(cfg2)
    first = _take(it2, 2)
    mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"),
                                 item_handlers={"data": grain.checkpoint.CheckpointHandler()})
    mngr.save(2, args=ocp.args.Composite(data=iterator_state.orbax_save_args(it2)))
    mngr.wait_until_finished()
    rest = _take(it2, 3)
    it2.close()
    _assert_same(first + rest, ref)
    it2b = pipeline.make_iterator(cfg2)
    mngr.restore(2, args=ocp.args.Composite(data=iterator_state.orbax_restore_args(it2b)))
    _assert_same(_take(it2b, 3), rest)
    it2b.close()
    mngr.close()


def test_bad_files_are_logged_by_path_skipped_and_counted(photo_dir_with_bad, caplog):
    cfg = _config(photo_dir_with_bad, batch_size=1, num_epochs=1, shuffle=False)
    with caplog.at_level(logging.WARNING):
        batches = list(pipeline.make_iterator(cfg))
    assert len(batches) == len(PHOTOS)  # every good image once, no bad one
    assert sum(int(b["skipped"][0]) for b in batches) == 2
    text = caplog.text
    assert "broken.png: corrupt" in text and "empty.jpg: empty file" in text


def test_small_images_rejected_with_a_clear_message(tmp_path, caplog):
    io.write_png(str(tmp_path / "big.png"), np.full((80, 80, 3), 0.5, np.float32))
    io.write_png(str(tmp_path / "tiny.png"), np.full((40, 50, 3), 0.5, np.float32))
    cfg = _config(str(tmp_path), batch_size=1, num_epochs=1, shuffle=False,
                  small_image_policy="reject")
    with caplog.at_level(logging.WARNING):
        batches = list(pipeline.make_iterator(cfg))
    assert len(batches) == 1 and int(batches[0]["skipped"][0]) == 0
    assert "tiny.png: 40x50 is smaller than the 64x64 crop" in caplog.text
    cfg.small_image_policy = "upscale"
    assert len(list(pipeline.make_iterator(cfg))) == 2


def _constant_images(folder, values):
    os.makedirs(folder, exist_ok=True)
    for i, v in enumerate(values):
        io.write_png(os.path.join(folder, f"{i:02d}.png"), np.full((32, 32, 3), v / 255, np.float32))


def _levels(batches):
    return [int(round(float(g.mean()) * 255)) for b in batches for g in b["gt"]]


def test_two_hosts_see_disjoint_examples_covering_the_set(tmp_path):
    values = [10 * (i + 1) for i in range(10)]
    _constant_images(str(tmp_path), values)
    cfg = _config(str(tmp_path), crop_size=32, batch_size=2, num_epochs=1)
    seen = []
    for host in range(2):
        shard = grain.sharding.ShardOptions(shard_index=host, shard_count=2, drop_remainder=True)
        seen.append(_levels(pipeline.make_iterator(cfg, shard_options=shard)))
    assert len(seen[0]) == len(seen[1]) == 5
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == values


def test_sources_are_mixed_by_weight(tmp_path):
    _constant_images(str(tmp_path / "a"), [40] * 4)
    _constant_images(str(tmp_path / "b"), [200] * 4)
    cfg = _config("", crop_size=16, batch_size=8, use_resize_crop=False)
    cfg.sources = [{"type": "folder", "path": str(tmp_path / "a"), "weight": 3.0},
                   {"type": "folder", "path": str(tmp_path / "b"), "weight": 1.0,
                    "resize_range": (0.5, 1.0)}]
    levels = _levels(_take(pipeline.make_iterator(cfg), 8))
    assert set(levels) == {40, 200}
    assert abs(levels.count(40) / len(levels) - 0.75) < 0.05


def test_tfds_source_in_the_pipeline():
    with tfds.testing.mock_data(num_examples=6):
        cfg = _config("", task="sr", scale=2)
        cfg.sources = [{"type": "tfds", "name": "div2k/bicubic_x4", "image_key": "hr"}]
        it = pipeline.make_iterator(cfg)
    batch = next(it)  # mock images are ~20-60 px: upscaled to the crop
    assert batch["gt"].shape == (4, 64, 64, 3) and batch["lq"].shape == (4, 32, 32, 3)
    assert int(batch["skipped"].sum()) == 0


def test_paired_folders_give_aligned_pairs(tmp_path, photo_dir):
    for name in os.listdir(photo_dir)[:3]:
        gt = io.read_image(os.path.join(photo_dir, name))[:96, :96]
        io.write_png(str(tmp_path / "hr" / name), gt)
        gt8 = io.read_image(str(tmp_path / "hr" / name))
        io.write_png(str(tmp_path / "lr" / name), gt8.reshape(48, 2, 48, 2, 3).mean(axis=(1, 3)))
    cfg = _config("", task="sr", scale=2, use_resize_crop=False)
    cfg.sources = [{"type": "paired", "path": str(tmp_path / "hr"), "lq_path": str(tmp_path / "lr")}]
    batch = next(pipeline.make_iterator(cfg))
    pooled = batch["gt"].reshape(4, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(pooled, batch["lq"], atol=0.5 / 255 + 1e-6)  # 8-bit rounding


def test_config_errors_are_clear(tmp_path):
    cfg = _config(str(tmp_path))
    with pytest.raises(ValueError, match=f"no images in '{tmp_path}'"):
        pipeline.build_dataset(cfg)
    cfg.sources = []
    with pytest.raises(ValueError, match="sources is empty"):
        pipeline.build_dataset(cfg)
    with pytest.raises(ValueError, match="multiple of the number of hosts"):
        pipeline.host_batch_size(6, 4)


def test_host_batches_become_global_arrays():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = {"gt": np.random.default_rng(0).random((8, 16, 16, 3)).astype(np.float32),
             "skipped": np.arange(8, dtype=np.int32)}
    out = pipeline.make_global_batch(batch, mesh)
    assert out["gt"].shape == (8, 16, 16, 3) and len(out["gt"].addressable_shards) == 8
    assert out["gt"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(out["gt"]), batch["gt"])
    assert int(out["skipped"].sum()) == 28


class _FlakySource:
    """A source whose key 2 raises an unexpected error (not an image-reading one)."""
    weight, resize_range = 1.0, None

    def keys(self):
        return [0, 1, 2, 3]

    def load(self, key):
        if key == 2:
            raise RuntimeError("decoder exploded")
        return np.full((64, 64, 3), key / 10, np.float32), None

    def describe(self, key):
        return f"flaky[{key}]"


def test_unexpected_errors_of_one_record_are_skipped_and_named(caplog):
    cfg = _config("", batch_size=1, num_epochs=1, shuffle=False)
    with caplog.at_level(logging.WARNING):
        batches = list(pipeline.make_iterator(cfg, opened_sources=[_FlakySource()]))
    assert len(batches) == 3 and sum(int(b["skipped"][0]) for b in batches) == 1
    assert "flaky[2]: RuntimeError: decoder exploded" in caplog.text


def test_a_source_of_only_bad_files_is_refused_before_training(tmp_path, caplog):
    for i in range(12):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"junk")
    with pytest.raises(pipeline.UnusableSourceError) as e:
        pipeline.make_iterator(_config(str(tmp_path)))
    # one line naming the source, how many were tried and the first file's reason
    assert str(e.value).startswith("data.sources[0]: none of 8 sampled images of its 12 can be "
                                   f"read (e.g. {tmp_path / 'bad00.png'}: ")
    assert str(e.value).endswith("; check the files or remove the source")
    assert "\n" not in str(e.value)
    # some bad ones: a warning, and training goes on
    io.write_png(str(tmp_path / "good.png"), np.full((80, 80, 3), 0.5, np.float32))
    with caplog.at_level(logging.WARNING):
        assert pipeline.check_source(pipeline.open_sources(_config(str(tmp_path)))[0],
                                     [str(tmp_path / n) for n in ("good.png", "bad00.png")], 0) == 1
    assert "data.sources[0]: 1 of 2 sampled images are unusable" in caplog.text


def test_a_long_run_of_bad_records_stops_with_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_BAD", 20)  # 1000 in real runs
    monkeypatch.setattr(pipeline, "SOURCE_SAMPLE", 0)        # past the up-front check
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"junk")
    it = pipeline.make_iterator(_config(str(tmp_path)))
    with pytest.raises(RuntimeError, match="20 unusable records in a row"):
        next(it)
