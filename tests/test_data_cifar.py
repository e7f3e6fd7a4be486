"""CIFAR-FS and FC100: the class lists of splits.md, the CIFAR-100 archive loader, the
learn2learn layouts, the cache, every bad-input path, and a 3-episode `bench run`."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from fewshot_bench.data import create_dataset
from fewshot_bench.data.cache import data_cache_dir
from fewshot_bench.data.cifar import ASSETS, cifar100_classes, reference_split
from fewshot_bench.errors import BenchError
from test_data_fakes import (SPLITS_MD, explain, files_under, make_cifar100, make_fc100_pickles,
                             make_l2l_cifarfs, tiny_run)

SPLITS = ("train", "val", "test")


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """Outside tmp_path (the data root of most tests): nothing may appear in the data."""
    folder = tmp_path_factory.mktemp("user-cache")
    monkeypatch.setenv("FEWSHOT_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    make_cifar100(root)
    return root


# --------------------------------------------------------------------------------------
# the class lists are exactly those of splits.md
# --------------------------------------------------------------------------------------

def _splits_md_lists() -> dict[str, dict[str, list[str]]]:
    """{'cifar-fs': {split: names}, 'fc100': {...}} parsed from splits.md, else from the
    committed JSON (outside this workspace)."""
    if not SPLITS_MD.is_file():
        return {name: {s: json.loads((ASSETS / f).read_text())[s] for s in SPLITS}
                for name, f in (("cifar-fs", "cifar_fs_split.json"), ("fc100", "fc100_split.json"))}
    md = SPLITS_MD.read_text()
    out = {}
    for name, title, field in (("cifar-fs", "## CIFAR-FS", "Names"),
                               ("fc100", "## FC100", "Fine classes")):
        section = md[md.index(title):]
        section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
        out[name] = {}
        for split, head in zip(SPLITS, ("meta-train", "meta-val", "meta-test")):
            sub = section[section.index(f"### {head}"):]
            out[name][split] = re.search(rf"^{field}: (.*)$", sub, re.M).group(1).split(", ")
    return out


@pytest.mark.parametrize("name,sizes", [("cifar-fs", (64, 16, 20)), ("fc100", (60, 20, 20))])
def test_class_lists_are_those_of_splits_md(name, sizes, archive_root):
    expected = _splits_md_lists()[name]
    for split, size in zip(SPLITS, sizes):
        assert sorted(reference_split(name)[split]) == sorted(expected[split])
        data = create_dataset(name, split, archive_root)
        assert data.class_names == sorted(expected[split])  # what a run actually uses
        assert data.num_classes == size
    everything = [c for s in SPLITS for c in expected[s]]
    assert sorted(everything) == sorted(cifar100_classes()["fine_label_names"])  # disjoint, all 100


def test_fc100_splits_are_whole_superclasses():
    info = cifar100_classes()
    split_file = json.loads((ASSETS / "fc100_split.json").read_text())
    for split, n in zip(SPLITS, (12, 4, 4)):
        supers = split_file["superclasses"][split]
        assert len(supers) == n
        assert sorted(split_file[split]) == sorted(c for s in supers for c in info["superclasses"][s])


def test_split_files_record_their_provenance():
    for f in ("cifar_fs_split.json", "fc100_split.json", "cifar100_classes.json",
              "mini_imagenet_split.json"):
        assert "splits.md" in json.loads((ASSETS / f).read_text())["source"]


# --------------------------------------------------------------------------------------
# loading the archive
# --------------------------------------------------------------------------------------

def test_archive_images_and_labels(archive_root):
    fine = cifar100_classes()["fine_label_names"]
    data = create_dataset("cifar-fs", "val", archive_root)
    assert data.images.shape == (16 * 3, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.class_counts().tolist() == [3] * 16  # train + test images pooled
    # the red plane holds the fine label: every image sits under its own class name
    red = data.images[:, 0, 0, 0]
    assert [fine[r] for r in red] == [data.class_names[y] for y in data.labels]
    # channel-major rows became H x W x 3 (blue is a ramp along the width)
    assert (data.images[0, 5, :, 2] == np.arange(32) * 4).all()
    assert data.meta["layout"] == "CIFAR-100 python archive"
    assert data.meta["split_matches_reference"] is True


def test_second_load_comes_from_the_cache(tmp_path, user_cache):
    make_cifar100(tmp_path)
    first = create_dataset("fc100", "test", tmp_path)
    assert first.meta["cache_hit"] is False and first.meta["cache"]
    cache_dir = data_cache_dir(tmp_path)
    assert first.meta["cache"].startswith(str(cache_dir)) and cache_dir.parent == user_cache
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".json", ".npy", ".npy"]
    second = create_dataset("fc100", "test", tmp_path)
    assert second.meta["cache_hit"] is True
    assert np.array_equal(first.images, second.images)
    assert first.class_names == second.class_names and first.fingerprint() == second.fingerprint()
    # a changed source file invalidates the cache; the stale one is removed
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes())
    import os
    os.utime(train, ns=(1, 1))
    third = create_dataset("fc100", "test", tmp_path)
    assert third.meta["cache_hit"] is False
    assert len(list(cache_dir.glob("*.json"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path):
    make_cifar100(tmp_path)
    expected = np.array(create_dataset("cifar-fs", "test", tmp_path).images)
    images = next(data_cache_dir(tmp_path).glob("*.images.npy"))
    head = images.read_bytes()[:1000]
    images.unlink()  # (never truncate a mapped file in place: readers would get SIGBUS)
    images.write_bytes(head)  # a truncated cache file
    again = create_dataset("cifar-fs", "test", tmp_path)
    assert again.meta["cache_hit"] is False
    assert np.array_equal(expected, again.images)


def test_cache_older_versions_wrote_into_the_data_folder_is_read_not_written(tmp_path):
    make_cifar100(tmp_path)
    before = files_under(tmp_path)
    expected = np.array(create_dataset("cifar-fs", "test", tmp_path).images)
    assert files_under(tmp_path) == before  # the data folder is the user's
    legacy = tmp_path / ".fewshot-cache"
    shutil.move(data_cache_dir(tmp_path), legacy)  # where older versions put it
    data = create_dataset("cifar-fs", "test", tmp_path)
    assert data.meta["cache_hit"] is True and data.meta["cache"].startswith(str(legacy))
    assert np.array_equal(expected, data.images)
    assert not data_cache_dir(tmp_path).exists()
    unwritable = tmp_path / "ro"
    make_cifar100(unwritable)
    data_cache_dir(unwritable).parent.mkdir(parents=True, exist_ok=True)
    data_cache_dir(unwritable).write_text("not a folder")  # cannot hold a cache
    data = create_dataset("cifar-fs", "test", unwritable)  # decoded, kept in memory
    assert data.meta["cache"] is None and np.array_equal(expected, data.images)


def test_default_root_is_fewshot_data_then_home(tmp_path, monkeypatch):
    make_cifar100(tmp_path / "elsewhere")
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "elsewhere"))
    assert create_dataset("cifar-fs", "test").meta["source"] == str(
        tmp_path / "elsewhere" / "cifar-100-python")
    monkeypatch.delenv("FEWSHOT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(BenchError) as err:
        create_dataset("cifar-fs", "test")
    assert str(tmp_path / "home" / "data") in str(err.value)
    assert "FEWSHOT_DATA" in str(err.value)


# --------------------------------------------------------------------------------------
# learn2learn layouts
# --------------------------------------------------------------------------------------

def test_learn2learn_cifarfs_folder(tmp_path):
    make_l2l_cifarfs(tmp_path, per_class=3)
    data = create_dataset("cifar-fs", "test", tmp_path)
    assert data.meta["layout"] == "learn2learn CIFAR-FS (raw)"
    assert data.class_names == sorted(reference_split("cifar-fs")["test"])
    assert data.meta["split_matches_reference"] is True
    fine = cifar100_classes()["fine_label_names"]
    assert [fine[r] for r in data.images[:, 0, 0, 0]] == [data.class_names[y] for y in data.labels]
    # learn2learn's processed/ copy is read when it exists
    import shutil
    processed = tmp_path / "cifarfs" / "processed" / "test"
    for c in reference_split("cifar-fs")["test"]:
        shutil.copytree(tmp_path / "cifarfs" / "cifar100" / "data" / c, processed / c)
    data = create_dataset("cifar-fs", "test", tmp_path)
    assert data.meta["layout"] == "learn2learn CIFAR-FS (processed)"
    assert data.num_classes == 20 and len(data) == 60


def test_learn2learn_fc100_pickles(tmp_path):
    make_fc100_pickles(tmp_path)
    data = create_dataset("fc100", "val", tmp_path)
    assert data.meta["layout"] == "learn2learn FC100 pickles"
    assert data.class_names == sorted(reference_split("fc100")["val"])
    assert data.meta["split_matches_reference"] is True
    fine = cifar100_classes()["fine_label_names"]
    assert [fine[r] for r in data.images[:, 0, 0, 0]] == [data.class_names[y] for y in data.labels]


# --------------------------------------------------------------------------------------
# bad input: BenchError naming data set, path, what was expected and how to get it
# --------------------------------------------------------------------------------------

def _error(name, split, root) -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(name, split, root)
    msg = str(err.value)
    assert msg.startswith(f"{name}: ") and "Expected" in msg, msg
    return msg


def test_missing_root(tmp_path):
    msg = _error("cifar-fs", "test", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in msg and "no such folder" in msg
    assert "bench data download cifar-fs" in msg and "cifar-100-python.tar.gz" in msg


def test_wrong_layout(tmp_path):
    (tmp_path / "something-else").mkdir()
    msg = _error("fc100", "train", tmp_path)
    assert str(tmp_path / "cifar-100-python") in msg and "missing" in msg
    (tmp_path / "cifar-100-python").mkdir()
    msg = _error("fc100", "train", tmp_path)
    assert str(tmp_path / "cifar-100-python" / "train") in msg


def test_truncated_pickle_leaves_nothing_written(tmp_path):
    make_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    before = files_under(tmp_path)
    msg = _error("cifar-fs", "test", tmp_path)
    assert str(train) in msg and "truncated or corrupt" in msg
    assert files_under(tmp_path) == before
    assert not list(data_cache_dir(tmp_path).iterdir())  # nothing half written


def test_pickle_that_is_not_cifar(tmp_path):
    import pickle
    make_cifar100(tmp_path)
    with open(tmp_path / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({"images": [1, 2, 3]}, f)
    msg = _error("cifar-fs", "val", tmp_path)
    assert "not a CIFAR-100 pickle" in msg and "fine_labels" in msg


def test_meta_with_other_class_names(tmp_path):
    import pickle
    make_cifar100(tmp_path)
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"x"] * 100}, f)
    assert "fine_label_names" in _error("fc100", "val", tmp_path)


def test_archive_missing_a_class(tmp_path):
    make_cifar100(tmp_path, train_per_class=1, test_per_class=0)
    import pickle
    path = tmp_path / "cifar-100-python" / "train"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    keep = [i for i, y in enumerate(d[b"fine_labels"]) if y != 2]  # no baby
    d[b"fine_labels"] = [d[b"fine_labels"][i] for i in keep]
    d[b"data"] = d[b"data"][keep]
    with open(path, "wb") as f:
        pickle.dump(d, f)
    assert "no images of baby" in _error("cifar-fs", "test", tmp_path)


def test_fc100_pickle_corrupt_and_missing(tmp_path):
    make_fc100_pickles(tmp_path)
    (tmp_path / "FC100_test.pickle").write_bytes(b"\x80\x02}q\x00")  # cut short
    assert "FC100_test.pickle" in _error("fc100", "test", tmp_path)
    (tmp_path / "FC100_val.pickle").unlink()
    msg = _error("fc100", "val", tmp_path)
    assert "FC100_val.pickle" in msg and "missing" in msg


def test_cifarfs_folder_missing_class(tmp_path):
    import shutil
    make_l2l_cifarfs(tmp_path, per_class=1)
    shutil.rmtree(tmp_path / "cifarfs" / "cifar100" / "data" / "rose")
    msg = _error("cifar-fs", "test", tmp_path)
    assert "rose" in msg and "test.txt" in msg


# --------------------------------------------------------------------------------------
# 3-episode bench runs
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar-fs", "fc100"])
def test_bench_run_on_the_archive(name, archive_root, tmp_path):
    result = tiny_run(tmp_path, name, archive_root)
    assert result.exit_code == 0, explain(result)
    record = json.loads((tmp_path / "out-0" / "run.json").read_text())
    assert record["data"]["classes"] == 20 and record["data"]["images"] == 60


@pytest.mark.parametrize("name,make", [("cifar-fs", make_l2l_cifarfs), ("fc100", make_fc100_pickles)])
def test_bench_run_on_learn2learn_layouts(name, make, tmp_path):
    make(tmp_path / "data")
    result = tiny_run(tmp_path, name, tmp_path / "data")
    assert result.exit_code == 0, explain(result)


def test_bench_run_missing_data_exits_2_without_traceback(tmp_path):
    result = tiny_run(tmp_path, "cifar-fs", tmp_path / "nothing-here")
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("error: cifar-fs: ") and "Traceback" not in result.output
    assert not (tmp_path / "out-0").exists()


def test_bench_run_too_few_images_per_class(archive_root, tmp_path):
    result = tiny_run(tmp_path, "cifar-fs", archive_root, "--shots", "2", "--queries", "2")
    assert result.exit_code == 2, explain(result)
    assert "cifar-fs/test" in result.stderr and "--shots" in result.stderr
