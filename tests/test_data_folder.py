"""`folder:PATH`: any image folder, mixed formats and modes, the split file (the user's
PATH/split.json, or the automatic one written once, seeded, to the user cache), bad input,
and 3-episode `bench run`s. Split ratios, split-file checks and image sizes are in
test_folder_split.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fewshot_bench.data import create_dataset
from fewshot_bench.data.cache import data_cache_dir
from fewshot_bench.data.common import DECODE_SIZE
from fewshot_bench.data.folder import _legacy_split_path, auto_split, auto_split_path
from fewshot_bench.errors import BenchError
from test_data_fakes import explain, files_under, make_image_folder, tiny_run


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def _error(path, split="test", **kw) -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(f"folder:{path}", split, **kw)
    msg = str(err.value)
    assert msg.startswith(f"folder:{path}") or msg.startswith("--dataset folder:"), msg
    return msg


def test_automatic_split_is_written_to_the_user_cache_and_reused(tmp_path, user_cache):
    path = make_image_folder(tmp_path / "pics")
    before = files_under(path)
    data = create_dataset(f"folder:{path}", "test")
    split_file = auto_split_path(path)
    assert split_file == user_cache / split_file.parent.name / "split-0.6-0.2-0.2.json"
    assert data.meta["split_file"] == str(split_file) and data.meta["split_auto"] is True
    assert data.meta["split_ratios"] == "0.6:0.2:0.2"
    record = json.loads(split_file.read_text())
    assert record["generated_by"] == "fewshot-bench" and record["seed"] == 0
    assert record["ratios"] == "0.6:0.2:0.2" and record["folder"] == str(path)
    assert [len(record[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum((record[s] for s in ("train", "val", "test")), [])) == [
        f"class_{c:02d}" for c in range(10)]
    assert data.class_names == record["test"]
    assert data.images.shape == (6, DECODE_SIZE, DECODE_SIZE, 3)
    stamp = split_file.stat().st_mtime_ns
    again = create_dataset(f"folder:{path}", "train")
    assert again.class_names == record["train"] and split_file.stat().st_mtime_ns == stamp
    assert auto_split([f"class_{c:02d}" for c in range(10)])["test"] == record["test"]  # seeded
    # the decoded cache sits next to the split file, in the user cache, not in the folder
    hit = create_dataset(f"folder:{path}", "test")
    assert hit.meta["cache_hit"] is True and hit.meta["cache"].startswith(str(data_cache_dir(path)))
    assert files_under(path) == before


def test_two_folders_of_one_name_get_their_own_cache(tmp_path):
    a = make_image_folder(tmp_path / "a" / "pics", n_classes=3)
    b = make_image_folder(tmp_path / "b" / "pics", n_classes=4)
    assert data_cache_dir(a) != data_cache_dir(b)
    assert create_dataset(f"folder:{a}", "train").num_classes == 1
    assert create_dataset(f"folder:{b}", "train").num_classes == 2
    assert json.loads(auto_split_path(a).read_text())["folder"] == str(a)


def test_photos_are_stored_at_the_run_image_size(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    default = create_dataset(f"folder:{path}", "test")
    big = create_dataset(f"folder:{path}", "test", image_size=224)
    assert big.images.shape[1:] == (224, 224, 3) and default.images.shape[1] == DECODE_SIZE
    assert create_dataset(f"folder:{path}", "test").meta["cache_hit"] is True  # both kept
    assert big.fingerprint() == default.fingerprint()  # one episode file for every size


def test_formats_and_modes_become_rgb(tmp_path):
    path = tmp_path / "modes"
    for c in ("a", "b", "c"):
        (path / c).mkdir(parents=True)
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent -> white
    rgba.resize((200, 200), Image.NEAREST).save(path / "a" / "x.png")
    Image.new("L", (30, 90), 77).save(path / "b" / "x.jpg")
    Image.new("P", (16, 16), 3).save(path / "c" / "x.gif")
    (path / "c" / "notes.txt").write_text("not an image")
    (path / ".hidden").mkdir()
    (path / ".hidden" / "x.png").write_bytes((path / "a" / "x.png").read_bytes())
    (path / "split.json").write_text(json.dumps({"test": ["a", "b", "c"]}))
    data = create_dataset(f"folder:{path}", "test")
    assert data.class_names == ["a", "b", "c"] and len(data) == 3
    a, b = data.images[0], data.images[1]
    assert tuple(a[0, 0]) == (255, 255, 255) and tuple(a[64, 64]) == (255, 0, 0)
    assert (b == b[..., :1]).all() and abs(int(b[0, 0, 0]) - 77) <= 2
    assert data.meta["split_auto"] is False and data.meta["split_file"] == str(path / "split.json")
    assert "split_ratios" not in data.meta


def test_user_split_file_and_errors(tmp_path):
    path = make_image_folder(tmp_path / "pics", n_classes=4)
    (path / "split.json").write_text(json.dumps({"train": ["class_00", "class_01"],
                                                 "test": ["class_02", "class_03"]}))
    assert create_dataset(f"folder:{path}", "test").class_names == ["class_02", "class_03"]
    msg = _error(path, "val")
    assert "no 'val' classes" in msg and "train, test" in msg
    (path / "split.json").write_text(json.dumps({"test": ["class_02", "class_99"]}))
    assert "class_99" in _error(path)
    (path / "split.json").write_text("{not json")
    assert "cannot read the split file" in _error(path)
    (path / "split.json").write_text(json.dumps({"test": "class_02"}))
    assert "not a JSON object of class-name lists" in _error(path)
    (path / "split.json").write_text(json.dumps(["class_02"]))
    assert "not a JSON object of class-name lists" in _error(path)


def test_bad_folders(tmp_path):
    assert "needs a path" in str(pytest.raises(BenchError, create_dataset, "folder:", "test").value)
    assert "no such folder" in _error(tmp_path / "absent")
    (tmp_path / "file.png").write_bytes(b"")
    assert "not a folder" in _error(tmp_path / "file.png")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.png")
    assert "1 images but no class subfolders" in _error(flat)
    two = make_image_folder(tmp_path / "two", n_classes=2)
    msg = _error(two)
    assert "only 2 class folder(s)" in msg and "--split-ratios 0:0:1" in msg
    assert not (two / "split.json").exists() and not auto_split_path(two).exists()
    assert create_dataset(f"folder:{two}", "test", split_ratios="0:0:1").num_classes == 2


def test_a_symlink_loop_inside_a_class_is_skipped_with_a_warning_naming_it(tmp_path):
    """Issue 17: one looping symlink used to make the whole folder unreadable, and the
    message named only the root. Now that entry is skipped, named, and the rest loads."""
    path = make_image_folder(tmp_path / "pics")
    loop_a, loop_b = path / "class_03" / "a.png", path / "class_03" / "b.png"
    loop_a.symlink_to("b.png")
    loop_b.symlink_to("a.png")
    (path / "class_04" / "sub").symlink_to("../class_04")  # a folder loop: not an image
    with pytest.warns(UserWarning) as caught:
        data = create_dataset(f"folder:{path}", "train", split_ratios="1:0:0")
    messages = [str(w.message) for w in caught if "cannot be read" in str(w.message)]
    assert len(messages) == 1, messages
    assert "skipped 2 entries of" in messages[0] and str(path / "class_03") in messages[0]
    assert str(loop_a) in messages[0] and "symbolic links" in messages[0]
    assert data.num_classes == 10 and len(data) == 30


def test_corrupt_image_names_the_file_and_writes_no_cache(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    split = auto_split([f"class_{c:02d}" for c in range(10)])
    victim = path / split["test"][0] / "img_0.bmp"
    for old in (path / split["test"][0]).iterdir():
        old.unlink()
    victim.write_bytes(b"BM" + b"\0" * 10)  # truncated bitmap
    before = files_under(path)
    msg = _error(path)
    assert str(victim) in msg and "cannot decode" in msg
    assert files_under(path) == before  # nothing in the user's folder
    cache = data_cache_dir(path)
    # the seeded split file is complete (it does not depend on the images): kept for reuse;
    # no cache, no temporary file
    assert sorted(p.name for p in cache.iterdir()) == ["split-0.6-0.2-0.2.json"]
    assert json.loads(auto_split_path(path).read_text())["test"] == split["test"]


def test_split_files_older_versions_wrote_are_still_read(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    legacy = _legacy_split_path(path)  # where they went when PATH was read-only
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"generated_by": "fewshot-bench", "seed": 0, "rule": "...",
                                  "train": ["class_00"], "val": ["class_01"],
                                  "test": ["class_02", "class_03"]}))
    with pytest.warns(UserWarning, match="6 class folder"):
        data = create_dataset(f"folder:{path}", "test")
    assert data.class_names == ["class_02", "class_03"]
    assert data.meta["split_file"] == str(legacy) and not auto_split_path(path).exists()
    # ... and PATH/split.json, which they wrote otherwise, comes first
    (path / "split.json").write_text(json.dumps({"generated_by": "fewshot-bench", "seed": 0,
                                                 "rule": "...", **auto_split(
                                                     [f"class_{c:02d}" for c in range(10)])}))
    data = create_dataset(f"folder:{path}", "test")
    assert data.meta["split_file"] == str(path / "split.json") and data.meta["split_auto"]


def test_bench_run_on_a_folder_writes_nothing_into_it(tmp_path, user_cache):
    path = make_image_folder(tmp_path / "pics")
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    result = tiny_run(tmp_path, f"folder:{path}", None)
    assert result.exit_code == 0, explain(result)
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before
    out = tmp_path / "out-0"
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["classes"] == 2
    split_file = record["data"]["split_file"]
    assert split_file == str(auto_split_path(path)) and split_file.startswith(str(user_cache))
    assert record["data"]["split_ratios"] == "0.6:0.2:0.2"
    assert record["config"]["split_ratios"] is None  # the default
    assert (out / "split.json").read_text() == auto_split_path(path).read_text()
    assert record["data"]["cache"].startswith(str(data_cache_dir(path)))


def test_bench_run_with_more_ways_than_classes(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    result = tiny_run(tmp_path, f"folder:{path}", None, "--ways", "5")
    assert result.exit_code == 2, explain(result)
    assert "--ways 5 needs 5 classes" in result.stderr and "Traceback" not in result.output
    assert np.all([not p.name.startswith("out-") for p in tmp_path.iterdir()])
