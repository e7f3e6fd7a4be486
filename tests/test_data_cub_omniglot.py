"""CUB-200-2011 (Chen et al. 2019 100/50/50 split) and Omniglot (background/evaluation,
Meta-Dataset val alphabets): loaders, splits, bad input, a 3-episode `bench run` each."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fewshot_bench.data import ImageSplit, create_dataset
from fewshot_bench.data.cache import data_cache_dir
from fewshot_bench.data.common import DECODE_SIZE
from fewshot_bench.data.cub import split_of
from fewshot_bench.data.omniglot import VAL_ALPHABETS
from fewshot_bench.errors import BenchError
from test_data_fakes import (OMNIGLOT_TEST_ALPHABETS, OMNIGLOT_TRAIN_ALPHABETS, explain,
                             files_under, make_cub, make_omniglot, tiny_run)


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """Outside tmp_path (the data root of most tests): nothing may appear in the data."""
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    make_cub(root)
    return root


def _error(name, split, root) -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(name, split, root)
    msg = str(err.value)
    assert msg.startswith(f"{name}: ") and "Expected" in msg, msg
    return msg


# --------------------------------------------------------------------------------------
# CUB
# --------------------------------------------------------------------------------------

def test_cub_split_rule():
    splits = [split_of(i) for i in range(200)]
    assert [splits.count(s) for s in ("train", "val", "test")] == [100, 50, 50]
    assert splits[:8] == ["train", "val", "train", "test"] * 2  # 001 train, 002 val, 004 test


def test_cub_loader(cub_root):
    seen = []
    for split, n in (("train", 100), ("val", 50), ("test", 50)):
        data = create_dataset("cub", split, cub_root)
        assert data.num_classes == n and len(data) == 3 * n
        assert data.images.shape[1:] == (DECODE_SIZE, DECODE_SIZE, 3)  # varied JPEG sizes
        seen += data.class_names
        if split == "test":
            assert data.class_names[:2] == ["004.Bird_number_004", "008.Bird_number_008"]
            gray = data.images[data.labels == 0][0]  # the class's first image is grayscale
            assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert len(set(seen)) == 200


def test_cub_photos_are_stored_at_the_run_image_size(cub_root):
    default = create_dataset("cub", "val", cub_root)
    big = create_dataset("cub", "val", cub_root, image_size=160)
    assert big.images.shape[1:] == (160, 160, 3) and default.images.shape[1] == DECODE_SIZE
    assert np.array_equal(big.labels, default.labels)
    # both caches stay (named by size), and one episode file serves both sizes
    assert create_dataset("cub", "val", cub_root).meta["cache_hit"] is True
    assert create_dataset("cub", "val", cub_root, image_size=160).meta["cache_hit"] is True
    assert "cub-160px-val-" in big.meta["cache"] and "cub-128px-val-" in default.meta["cache"]
    assert big.fingerprint() == default.fingerprint()
    assert default.fingerprint() == ImageSplit.fingerprint(default)  # as older versions had it


def test_cub_errors(tmp_path):
    msg = _error("cub", "test", tmp_path / "absent")
    assert "no such folder" in msg and "bench data download cub" in msg
    tmp_path.joinpath("unrelated").mkdir()
    assert str(tmp_path / "CUB_200_2011") in _error("cub", "test", tmp_path)
    base = make_cub(tmp_path, per_class=1)
    lines = (base / "classes.txt").read_text().splitlines()
    (base / "classes.txt").write_text("\n".join(lines[:-1]) + "\n")
    assert "199 classes listed" in _error("cub", "train", tmp_path)
    (base / "classes.txt").write_text("\n".join(lines) + "\n")
    victim = sorted((base / "images" / "004.Bird_number_004").iterdir())[0]
    jpeg = victim.read_bytes()
    victim.unlink()
    msg = _error("cub", "test", tmp_path)
    assert str(victim) in msg and "missing image" in msg
    victim.write_bytes(jpeg[: len(jpeg) // 3])  # truncated JPEG
    before = files_under(tmp_path)
    msg = _error("cub", "test", tmp_path)
    assert str(victim) in msg and "cannot decode" in msg
    assert files_under(tmp_path) == before  # nothing in the data folder
    assert not list(data_cache_dir(base).iterdir())  # no cache, no temporary file


def test_bench_run_on_cub(cub_root, tmp_path):
    result = tiny_run(tmp_path, "cub", cub_root)
    assert result.exit_code == 0, explain(result)


# --------------------------------------------------------------------------------------
# Omniglot
# --------------------------------------------------------------------------------------

def test_omniglot_splits(tmp_path):
    make_omniglot(tmp_path)
    train = create_dataset("omniglot", "train", tmp_path)
    val = create_dataset("omniglot", "val", tmp_path)
    test = create_dataset("omniglot", "test", tmp_path)
    alphabets = {s: {c.split("/")[0] for c in d.class_names} for s, d in
                 (("train", train), ("val", val), ("test", test))}
    assert alphabets == {"train": set(OMNIGLOT_TRAIN_ALPHABETS), "val": set(VAL_ALPHABETS),
                         "test": set(OMNIGLOT_TEST_ALPHABETS)}
    assert test.class_names[0] == "Keble/character01"
    assert test.images.shape == (12, 105, 105, 3)
    img = test.images[0]
    assert set(np.unique(img)) == {0, 255} and (img[..., 0] == img[..., 2]).all()  # 1-bit -> RGB


def test_omniglot_errors(tmp_path):
    assert "bench data download omniglot" in _error("omniglot", "test", tmp_path / "absent")
    base = make_omniglot(tmp_path)
    shutil.rmtree(base / "images_evaluation")
    msg = _error("omniglot", "test", tmp_path)
    assert str(base / "images_evaluation") in msg and "no such folder" in msg
    for a in VAL_ALPHABETS:
        shutil.rmtree(base / "images_background" / a)
    assert "no alphabet folders for the val split" in _error("omniglot", "val", tmp_path)
    png = next((base / "images_background" / "Latin").rglob("*.png"))
    png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert str(png) in _error("omniglot", "train", tmp_path)


def test_bench_run_on_omniglot(tmp_path):
    make_omniglot(tmp_path / "data")
    result = tiny_run(tmp_path, "omniglot", tmp_path / "data")
    assert result.exit_code == 0, explain(result)


def test_unreadable_folder_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    import fewshot_bench.data.omniglot as omniglot

    make_omniglot(tmp_path)

    def denied(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(omniglot, "list_subdirs", denied)
    with pytest.raises(BenchError) as err:
        create_dataset("omniglot", "train", tmp_path)
    assert str(err.value).startswith("omniglot: cannot read ") and "Permission denied" in str(err.value)
