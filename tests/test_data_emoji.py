"""The packaged "emoji" data set: split rules, array shapes, and loader errors (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fewshot_bench.data import create_dataset, list_datasets
from fewshot_bench.data.emoji import ASSETS, NPZ_NAME, SPLIT_NAME, _load_npz, load_emoji
from fewshot_bench.errors import BenchError

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def splits():
    return {name: create_dataset("emoji", name) for name in SPLITS}


@pytest.fixture(scope="module")
def all_class_names():
    with np.load(ASSETS / NPZ_NAME) as z:
        return sorted(str(c) for c in z["class_names"])


def test_registered():
    assert "emoji" in list_datasets()


def test_splits_disjoint_and_cover_all_classes(splits, all_class_names):
    names = [set(splits[s].class_names) for s in SPLITS]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert sorted(set().union(*names)) == all_class_names


def test_split_sizes(splits, all_class_names):
    n = len(all_class_names)
    counts = {s: splits[s].num_classes for s in SPLITS}
    assert counts["test"] >= 12
    for s, fraction in (("train", 0.55), ("val", 0.20), ("test", 0.25)):
        assert abs(counts[s] / n - fraction) < 0.06, counts


def test_images_and_labels(splits):
    for ds in splits.values():
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (64, 64, 3)
        assert ds.class_names == sorted(ds.class_names)
        assert set(ds.labels.tolist()) == set(range(ds.num_classes))
        assert ds.class_counts().min() >= 20
        assert len(ds.meta["vendor"]) == len(ds)
        assert set(ds.meta["vendor"].tolist()) <= {"google", "twitter"}
        # transparency was composited onto white, so nearly every corner pixel is white
        assert (ds.images[:, 0, 0] == 255).all(axis=-1).mean() > 0.9


def test_split_file_is_the_seeded_permutation(all_class_names):
    n = len(all_class_names)
    n_test = max(12, int(0.25 * n + 0.5))
    n_val = int(0.20 * n + 0.5)
    n_train = n - n_val - n_test
    order = [all_class_names[i] for i in np.random.default_rng(0).permutation(n)]
    expected = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    assert json.loads((ASSETS / SPLIT_NAME).read_text()) == expected


def test_npz_size_limit():
    assert (ASSETS / NPZ_NAME).stat().st_size <= 15 * 1024 * 1024


def test_npz_is_decompressed_once():
    load_emoji("train")
    before = _load_npz.cache_info()
    load_emoji("val")
    after = _load_npz.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


def test_corrupt_file_raises_bench_error(tmp_path):
    (tmp_path / NPZ_NAME).write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(BenchError, match="build_emoji_dataset.py"):
        create_dataset("emoji", "train", root=tmp_path)


def test_missing_file_raises_bench_error(tmp_path):
    with pytest.raises(BenchError, match="build_emoji_dataset.py"):
        _load_npz(tmp_path / NPZ_NAME)


def test_root_overrides_packaged_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / NPZ_NAME,
        images=rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8),
        labels=np.array([0, 0, 1, 1, 2, 2]),
        class_names=np.array(["a", "b", "c"]),
        vendor=np.array(["google", "twitter"] * 3),
        unified=np.array(["1F600"] * 6),
    )
    (tmp_path / SPLIT_NAME).write_text(json.dumps({"train": ["c", "a"], "val": [], "test": ["b"]}))
    ds = load_emoji("train", root=tmp_path)
    assert ds.class_names == ["a", "c"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
