"""Image sources: folders, list files, paired folders, TFDS (mocked), host sharding."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from adacode_jax import images as io
from adacode_jax.data import sources


def _img(path, value=0.5, size=(20, 30)):
    io.write_png(str(path), np.full((*size, 3), value, np.float32))


def test_folder_is_recursive_sorted_and_ignores_other_files(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.bmp", "notes.txt", ".hidden.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    keys = sources.FolderSource(str(tmp_path)).keys()
    assert [k[len(str(tmp_path)) + 1:] for k in keys] == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.bmp"]


def test_list_file_paths_resolve_against_the_root_or_the_list(tmp_path):
    (tmp_path / "imgs").mkdir()
    lst = tmp_path / "train.txt"
    lst.write_text("# comment\nimgs/x.png\n\n/abs/y.png\n")
    assert sources.FolderSource("", str(lst)).keys() == [str(tmp_path / "imgs/x.png"), "/abs/y.png"]
    assert sources.FolderSource("/data", str(lst)).keys() == ["/data/imgs/x.png", "/abs/y.png"]


def test_empty_and_missing_sources_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"empty image source: no images in '{tmp_path}'"):
        sources.FolderSource(str(tmp_path)).keys()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sources.FolderSource(str(tmp_path / "nowhere")).keys()
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        sources.open_source({"type": "folder", "list_file": str(tmp_path / "missing.txt")}).keys()
    with pytest.raises(ValueError, match="unknown source type"):
        sources.open_source({"type": "lmdb", "path": "x"})


def test_paired_folders_match_by_name_and_suffix(tmp_path):
    for name in ["0001", "sub/0002"]:
        _img(tmp_path / "hr" / f"{name}.png", size=(8, 8))
        _img(tmp_path / "lr" / f"{name}x2.png", size=(4, 4))
    src = sources.open_source({"type": "paired", "path": str(tmp_path / "hr"),
                               "lq_path": str(tmp_path / "lr"), "lq_suffix": "x2"})
    keys = src.keys()
    assert [(k[0].split("hr/")[1], k[1].split("lr/")[1]) for k in keys] == [
        ("0001.png", "0001x2.png"), ("sub/0002.png", "sub/0002x2.png")]
    gt, lq = src.load(keys[0])
    assert gt.shape == (8, 8, 3) and lq.shape == (4, 4, 3)
    (tmp_path / "hr" / "0003.png").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"1 GT images .* no LR image .*0003"):
        src.keys()


def test_paired_list_files_are_parallel(tmp_path):
    (tmp_path / "gt.txt").write_text("a.png\nb.png\n")
    (tmp_path / "lq.txt").write_text("a_x2.png\nb_x2.png\n")
    src = sources.PairedFolderSource("", list_file=str(tmp_path / "gt.txt"),
                                     lq_list_file=str(tmp_path / "lq.txt"))
    assert [k[1].rsplit("/", 1)[1] for k in src.keys()] == ["a_x2.png", "b_x2.png"]
    (tmp_path / "lq.txt").write_text("a_x2.png\n")
    with pytest.raises(ValueError, match="differ in length"):
        src.keys()


def test_tfds_source_reads_prepared_dataset():
    with tfds.testing.mock_data(num_examples=5):
        src = sources.open_source({"type": "tfds", "name": "div2k/bicubic_x4", "split": "train",
                                   "image_key": "hr", "lq_key": "lr"})
    assert src.keys() == [0, 1, 2, 3, 4]
    gt, lq = src.load(3)
    assert gt.dtype == np.float32 and gt.ndim == 3 and gt.shape[2] == 3
    assert 0 <= gt.min() and gt.max() <= 1 and lq.shape[2] == 3
    assert src.describe(3) == "tfds:div2k/bicubic_x4/train[3]"
    wrong = sources.TfdsSource("div2k/bicubic_x4", "train", src.reader, image_key="image")
    with pytest.raises(KeyError, match="features are \\['hr', 'lr'\\]"):
        wrong.load(0)


def test_tfds_source_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build div2k"):
        sources.open_source({"type": "tfds", "name": "div2k/bicubic_x4", "data_dir": str(tmp_path)})


def test_shard_keys_disjoint_equal_and_covering():
    keys = list(range(11))
    shards = [sources.shard_keys(keys, i, 3) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert set().union(*map(set, shards)) == set(range(9))
    assert not set(shards[0]) & set(shards[1])
    uneven = [sources.shard_keys(keys, i, 3, drop_remainder=False) for i in range(3)]
    assert sorted(sum(uneven, [])) == keys
