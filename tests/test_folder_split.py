"""`folder:PATH` traps a new user meets (issue 15): too few classes in a split and
`--split-ratios`, split files that are wrong (a class in two splits, unknown classes or
keys, values that are not lists), and photos stored at the run's image size."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from fewshot_bench import split_ratios
from fewshot_bench.config import RunConfig
from fewshot_bench.data import create_dataset
from fewshot_bench.data.cache import data_cache_dir, user_cache_dir
from fewshot_bench.data.common import DECODE_SIZE
from fewshot_bench.data.folder import auto_split, auto_split_path, split_sizes
from fewshot_bench.errors import BenchError
from test_data_fakes import TINY_RUN, explain, files_under, make_image_folder, run_bench, tiny_run


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


@pytest.fixture
def fifteen(tmp_path):
    """The measured case: 15 classes, the default split gives test 3 of them."""
    return make_image_folder(tmp_path / "pics", n_classes=15, per_class=3)


def _old_auto_split(classes, seed=0):
    """The automatic split of the versions before --split-ratios, verbatim."""
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n = len(order)
    n_val = max(1, round(n * 0.2))
    n_test = max(1, round(n * 0.2))
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def test_the_suite_never_writes_to_the_real_user_cache(monkeypatch, tmp_path_factory):
    monkeypatch.undo()  # this module's own cache folder: what is left is conftest's
    assert os.environ.get("FEWSHOT_CACHE")
    assert user_cache_dir().is_relative_to(tmp_path_factory.getbasetemp())


# --------------------------------------------------------------------------------------
# --split-ratios
# --------------------------------------------------------------------------------------

def test_default_ratios_give_exactly_the_old_class_lists():
    for n in range(3, 120):
        classes = [f"c{i:03d}" for i in range(n)]
        assert auto_split(classes) == _old_auto_split(classes), n
        assert auto_split(classes, ratios="3:1:1") == _old_auto_split(classes), n


def test_split_sizes():
    third = split_ratios.fractions("1:1:1")
    assert split_sizes(15, split_ratios.fractions("0:0:1")) == {"train": 0, "val": 0, "test": 15}
    assert split_sizes(15, split_ratios.fractions("0:1:1")) == {"train": 0, "val": 7, "test": 8}
    assert split_sizes(3, third) == {"train": 1, "val": 1, "test": 1}
    assert split_sizes(1, split_ratios.fractions("0:0:1")) == {"train": 0, "val": 0, "test": 1}
    # every split with a share gets a class, one without none, and no class is lost
    rng = np.random.default_rng(0)
    for _ in range(500):
        shares = rng.random(3) * (rng.random(3) < 0.8)
        if shares.sum() == 0:
            continue
        fr = split_ratios.fractions(":".join(str(v) for v in shares))
        n = int(rng.integers((shares > 0).sum(), 40))
        sizes = split_sizes(n, fr)
        assert sum(sizes.values()) == n
        assert all((sizes[s] >= 1) == (f > 0) for s, f in zip(("train", "val", "test"), fr))
    with pytest.raises(ValueError):
        split_sizes(2, third)


def test_canonical_ratios():
    assert split_ratios.canonical(None) is None
    assert split_ratios.canonical("0.6:0.2:0.2") is None and split_ratios.canonical("3:1:1") is None
    assert split_ratios.canonical(" 0:0:2 ") == "0:0:1"
    assert split_ratios.tag("0:0:1") == "0-0-1" and split_ratios.tag(None) == "0.6-0.2-0.2"
    assert RunConfig(dataset="folder:x", split_ratios="0:0:5").validate().split_ratios == "0:0:1"
    assert RunConfig(dataset="folder:x", split_ratios="60:20:20").validate().split_ratios is None
    for bad, why in (("1:1", "three numbers"), ("-1:1:1", ">= 0"), ("0:0:0", "all zeros"),
                     ("a:1:1", "not a number"), ("inf:1:1", "finite"), ("", "three numbers")):
        with pytest.raises(BenchError, match=why):
            RunConfig(dataset="folder:x", split_ratios=bad).validate()
    with pytest.raises(BenchError, match="folder:PATH data sets only"):
        RunConfig(dataset="cub", split_ratios="0:0:1").validate()
    with pytest.raises(BenchError, match="folder:PATH data sets only"):
        create_dataset("emoji", "test", split_ratios="0:0:1")


def test_default_split_too_small_for_5_ways_says_which_file_and_how_to_change_it(tmp_path,
                                                                                 fifteen):
    result = tiny_run(tmp_path, f"folder:{fifteen}", None, "--ways", "5")
    assert result.exit_code == 2, explain(result)
    msg = result.stderr
    assert "--ways 5 needs 5 classes" in msg and "has only 3" in msg and "Traceback" not in msg
    assert str(auto_split_path(fifteen)) in msg  # the split file used
    assert "--split-ratios 0:0:1" in msg and "all 15 classes in test" in msg
    assert f"copy that file to {fifteen / 'split.json'} and edit its lists" in msg
    assert len(msg.strip().splitlines()) == 1  # one paragraph


def test_split_ratios_0_0_1_makes_a_5_way_run_on_15_classes_work(tmp_path, fifteen):
    before = files_under(fifteen)
    result = tiny_run(tmp_path, f"folder:{fifteen}", None, "--ways", "5",
                      "--split-ratios", "0:0:1")
    assert result.exit_code == 0, explain(result)
    out = tmp_path / "out-0"
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["split_ratios"] == "0:0:1"
    assert record["data"]["classes"] == 15 and record["data"]["split_ratios"] == "0:0:1"
    split_file = auto_split_path(fifteen, "0:0:1")
    assert record["data"]["split_file"] == str(split_file)
    copy = json.loads((out / "split.json").read_text())
    assert copy["ratios"] == "0:0:1" and len(copy["test"]) == 15
    assert copy["train"] == [] and copy["val"] == []
    # another class split is another episode file: the default's is never reused for it
    assert "0_0_1" in record["episodes"]["file"]
    assert files_under(fifteen) == before
    # the default split keeps its own file, with today's class lists
    create_dataset(f"folder:{fifteen}", "test")
    default = json.loads(auto_split_path(fifteen).read_text())
    assert {s: default[s] for s in ("train", "val", "test")} == _old_auto_split(
        [f"class_{c:02d}" for c in range(15)])
    assert auto_split_path(fifteen) != split_file and split_file.is_file()


def test_zero_share_split_and_user_split_file(tmp_path, fifteen):
    msg = str(pytest.raises(BenchError, create_dataset, f"folder:{fifteen}", "train",
                            split_ratios="0:0:1").value)
    assert "no 'train' classes" in msg and "--split-ratios 0:0:1 gives it no class" in msg
    (fifteen / "split.json").write_text(json.dumps({"test": ["class_00", "class_01"]}))
    msg = str(pytest.raises(BenchError, create_dataset, f"folder:{fifteen}", "test",
                            split_ratios="0:0:1").value)
    assert str(fifteen / "split.json") in msg and "move it out of the folder" in msg


@pytest.mark.parametrize("bad", ["1:1", "-1:1:1", "0:0:0", "x:y:z"])
def test_bad_split_ratios_exit_2(tmp_path, bad):
    result = run_bench(tmp_path, "run", "--dataset", f"folder:{tmp_path}",
                       "--split-ratios", bad, *TINY_RUN)
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("error: --split-ratios") and "Traceback" not in result.output


def test_split_ratios_on_sweep_and_finetune(tmp_path):
    for cmd in (["sweep", "--param", "lambda=0.5", "--out", str(tmp_path / "s")],
                ["finetune", "--out", str(tmp_path / "f")]):
        result = run_bench(tmp_path, *cmd, "--dataset", "emoji", "--split-ratios", "0:0:1")
        assert result.exit_code == 2, explain(result)
        assert "folder:PATH data sets only" in result.stderr


# --------------------------------------------------------------------------------------
# split files that are wrong
# --------------------------------------------------------------------------------------

def _write(path, split):
    (path / "split.json").write_text(json.dumps(split))


def _refused(path, split="test") -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(f"folder:{path}", split)
    msg = str(err.value)
    assert msg.startswith(f"folder:{path}: ") and str(path / "split.json") in msg, msg
    return msg


def test_split_file_checks(tmp_path):
    path = make_image_folder(tmp_path / "pics", n_classes=5, per_class=1)
    _write(path, {"train": ["class_00"], "val": ["class_01", "class_02"],
                  "test": ["class_02", "class_03", "class_04", "class_01"]})
    msg = _refused(path, "train")  # whichever split is asked for
    assert "2 classes in more than one split" in msg
    assert "class_01 (val and test), class_02 (val and test)" in msg
    assert "Remove each from all but one of its lists" in msg
    _write(path, {"train": ["class_00", "cat"], "test": ["class_01", "Class_02"]})
    msg = _refused(path)
    assert "2 classes with no images" in msg and "Class_02, cat" in msg and "case-sensitive" in msg
    (path / "empty").mkdir()
    _write(path, {"test": ["class_01", "empty"]})
    assert "class folders without images" in _refused(path)
    _write(path, {"train": ["class_00"], "tset": ["class_01"]})
    msg = _refused(path, "train")
    assert "unknown key 'tset' (did you mean 'test'?)" in msg and "Rename or remove" in msg
    _write(path, {"train": ["class_00"], "test": {"class_01": 1}})
    assert '"test" is a dict' in _refused(path, "train")
    _write(path, {"train": ["class_00"], "test": [1, 2]})
    assert "entries that are not strings" in _refused(path, "train")
    # a repeat within one list is harmless; classes in no split are left out, with a warning
    _write(path, {"train": ["class_00", "class_00"], "test": ["class_01", "class_02"]})
    with pytest.warns(UserWarning, match=r"2 class folder\(s\) are in no split .*class_03, "
                                         r"class_04"):
        data = create_dataset(f"folder:{path}", "train")
    assert data.class_names == ["class_00"] and data.meta["unassigned_classes"] == [
        "class_03", "class_04"]


def test_automatic_split_file_that_no_longer_fits_the_folder(tmp_path):
    path = make_image_folder(tmp_path / "pics", n_classes=5, per_class=1)
    create_dataset(f"folder:{path}", "test")
    split = json.loads(auto_split_path(path).read_text())
    victim = split["test"][0]
    for f in (path / victim).iterdir():
        f.unlink()
    (path / victim).rmdir()
    msg = str(pytest.raises(BenchError, create_dataset, f"folder:{path}", "train").value)
    assert victim in msg and str(auto_split_path(path)) in msg
    assert "delete the file to split again" in msg


@pytest.mark.parametrize("split", [{"val": ["class_00", "class_01"], "test": ["class_01"]},
                                   {"test": ["class_00", "no_such_class"]}])
def test_bad_split_file_exits_2(tmp_path, split):
    path = make_image_folder(tmp_path / "pics", n_classes=3, per_class=4)
    _write(path, split)
    result = tiny_run(tmp_path, f"folder:{path}", None)
    assert result.exit_code == 2, explain(result)
    assert str(path / "split.json") in result.stderr and "Traceback" not in result.output
    assert ("class_01 (val and test)" in result.stderr) or ("no_such_class" in result.stderr)


# --------------------------------------------------------------------------------------
# photos stored at the run's image size
# --------------------------------------------------------------------------------------

def _cached_sizes(path) -> dict[str, int]:
    return {re.search(r"-(\d+px)-", f.name)[1]: np.load(f, mmap_mode="r").shape[1]
            for f in data_cache_dir(path).glob("folder-*.images.npy")}


def test_cache_follows_the_run_image_size(tmp_path):
    path = make_image_folder(tmp_path / "pics", n_classes=5, per_class=4)
    args = [a for a in TINY_RUN if a not in ("--image-size", "32")]
    assert len(args) == len(TINY_RUN) - 2
    common = ["run", "--dataset", f"folder:{path}", "--split-ratios", "0:0:1", *args,
              "--episodes-dir", str(tmp_path / "episodes")]
    result = run_bench(tmp_path, *common, "--out", str(tmp_path / "a"))  # the backbone's 224
    assert result.exit_code == 0, explain(result)
    first = json.loads((tmp_path / "a" / "run.json").read_text())
    assert first["data"]["image_size"] == 224 and _cached_sizes(path) == {"224px": 224}
    result = run_bench(tmp_path, *common, "--image-size", "128", "--out", str(tmp_path / "b"))
    assert result.exit_code == 0, explain(result)
    assert _cached_sizes(path) == {"224px": 224, "128px": 128}  # side by side
    second = json.loads((tmp_path / "b" / "run.json").read_text())
    # one episode file for every image size: the data fingerprint does not depend on it
    assert second["episodes"] == first["episodes"]
    small = create_dataset(f"folder:{path}", "test", image_size=48, split_ratios="0:0:1")
    assert small.images.shape[1:] == (48, 48, 3)
    assert small.fingerprint() == second["episodes"]["data_fingerprint"]
    assert create_dataset(f"folder:{path}", "test", split_ratios="0:0:1").images.shape[1] == \
        DECODE_SIZE  # callers that do not say keep 128 px
