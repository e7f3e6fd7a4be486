"""miniImageNet and tieredImageNet from learn2learn's pickles: loaders, bad input, and a
3-episode `bench run` on each."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from fewshot_bench.data import create_dataset
from fewshot_bench.data.cache import data_cache_dir
from fewshot_bench.data.mini_imagenet import reference_split
from fewshot_bench.errors import BenchError
from test_data_fakes import (MINI_FILES, dump_py3, explain, files_under, make_mini_imagenet,
                             make_tiered_imagenet, png_bytes, tiny_run)


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """Outside tmp_path (the data root of most tests): nothing may appear in the data."""
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path_factory.mktemp("user-cache")))


def _error(name, split, root) -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(name, split, root)
    msg = str(err.value)
    assert msg.startswith(f"{name}: ") and "Expected" in msg, msg
    assert f"bench data download {name}" in msg
    return msg


# --------------------------------------------------------------------------------------
# miniImageNet
# --------------------------------------------------------------------------------------

def test_mini_imagenet_loader(tmp_path):
    make_mini_imagenet(tmp_path)
    data = create_dataset("mini-imagenet", "val", tmp_path)
    wnids = reference_split()["val"][:3]
    assert data.class_names == sorted(wnids)
    assert data.images.shape == (9, 84, 84, 3)
    assert data.class_counts().tolist() == [3, 3, 3]
    # red = 10 x the class's position in the file's class_dict
    assert [wnids[r // 10] for r in data.images[:, 0, 0, 0]] == [data.class_names[y] for y in data.labels]
    assert data.meta["split_matches_reference"] is False  # 3 of the 16 classes
    assert create_dataset("mini-imagenet", "val", tmp_path).meta["cache_hit"] is True


def test_mini_imagenet_in_a_subfolder_and_reference_flag(tmp_path):
    make_mini_imagenet(tmp_path / "mini-imagenet", per_class=1, classes_per_split=20)
    data = create_dataset("mini-imagenet", "test", tmp_path)
    assert data.meta["split_matches_reference"] is True and data.num_classes == 20


def test_mini_imagenet_errors(tmp_path):
    msg = _error("mini-imagenet", "train", tmp_path / "absent")
    assert "no such folder" in msg
    make_mini_imagenet(tmp_path)
    (tmp_path / MINI_FILES["train"]).unlink()
    msg = _error("mini-imagenet", "train", tmp_path)
    assert str(tmp_path / MINI_FILES["train"]) in msg and "missing file" in msg
    path = tmp_path / MINI_FILES["test"]
    path.write_bytes(path.read_bytes()[:5000])  # truncated download
    assert "truncated or corrupt" in _error("mini-imagenet", "test", tmp_path)
    dump_py3({"images": np.zeros((2, 84, 84, 3), np.uint8)}, tmp_path / MINI_FILES["val"])
    assert "not a miniImageNet pickle" in _error("mini-imagenet", "val", tmp_path)
    dump_py3({"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"n1": [0, 5]}},
             tmp_path / MINI_FILES["val"])
    assert "class_dict entry n1" in _error("mini-imagenet", "val", tmp_path)
    assert not list(data_cache_dir(tmp_path).glob("*"))  # nothing half written


def test_bench_run_on_mini_imagenet(tmp_path):
    make_mini_imagenet(tmp_path / "data")
    result = tiny_run(tmp_path, "mini-imagenet", tmp_path / "data")
    assert result.exit_code == 0, explain(result)
    record = json.loads((tmp_path / "out-0" / "run.json").read_text())
    assert record["data"]["dataset"] == "mini-imagenet" and record["data"]["classes"] == 3


# --------------------------------------------------------------------------------------
# tieredImageNet
# --------------------------------------------------------------------------------------

def test_tiered_imagenet_loader(tmp_path):
    make_tiered_imagenet(tmp_path)
    data = create_dataset("tiered-imagenet", "val", tmp_path)
    assert data.class_names == ["n09000003", "n09000004", "n09000005"]
    assert data.images.shape == (9, 84, 84, 3)
    assert (data.images[:, 0, 0, 0] == data.labels * 20).all()  # red = 20 x label_specific
    assert (data.images[:, 0, 0, 1] == np.arange(9)).all()  # file order kept
    again = create_dataset("tiered-imagenet", "val", tmp_path)
    assert again.meta["cache_hit"] is True and np.array_equal(again.images, data.images)


def test_tiered_imagenet_errors(tmp_path):
    assert "no such folder" in _error("tiered-imagenet", "test", tmp_path / "absent")
    tmp_path.joinpath("other").mkdir()
    msg = _error("tiered-imagenet", "test", tmp_path)
    assert str(tmp_path / "tiered-imagenet") in msg
    folder = make_tiered_imagenet(tmp_path)
    (folder / "train_labels.pkl").unlink()
    assert "train_labels.pkl" in _error("tiered-imagenet", "train", tmp_path)
    dump_py3({"labels": [0, 1]}, folder / "val_labels.pkl")
    assert "label_specific" in _error("tiered-imagenet", "val", tmp_path)
    # a corrupt PNG inside the list: named by file and position; no cache left behind
    with open(folder / "test_images_png.pkl", "rb") as f:
        images = pickle.load(f)
    images[4] = np.frombuffer(png_bytes(np.zeros((84, 84, 3), np.uint8))[:60], np.uint8)
    dump_py3(images, folder / "test_images_png.pkl")
    before = files_under(tmp_path)
    msg = _error("tiered-imagenet", "test", tmp_path)
    assert "test_images_png.pkl (image 4)" in msg and "cannot decode" in msg
    assert files_under(tmp_path) == before  # no cache, and nothing in the data folder
    assert not list(data_cache_dir(folder).glob("*"))
    dump_py3(images[:5], folder / "test_images_png.pkl")
    assert "5 images for 9 labels" in _error("tiered-imagenet", "test", tmp_path)


def test_bench_run_on_tiered_imagenet(tmp_path):
    make_tiered_imagenet(tmp_path / "data")
    result = tiny_run(tmp_path, "tiered-imagenet", tmp_path / "data", "--split", "train")
    assert result.exit_code == 0, explain(result)
