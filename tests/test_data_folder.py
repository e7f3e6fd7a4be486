"""`folder:PATH`: any image folder, mixed formats and modes, the split file (given or
written once, seeded) and its fallback location, bad input, and a 3-episode `bench run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fewshot_bench.data import create_dataset
from fewshot_bench.data.cache import data_cache_dir
from fewshot_bench.data.common import DECODE_SIZE
from fewshot_bench.data.folder import auto_split
from fewshot_bench.errors import BenchError
from test_data_fakes import explain, files_under, make_image_folder, tiny_run


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def _error(path, split="test") -> str:
    with pytest.raises(BenchError) as err:
        create_dataset(f"folder:{path}", split)
    msg = str(err.value)
    assert msg.startswith(f"folder:{path}") or msg.startswith("--dataset folder:"), msg
    return msg


def test_automatic_split_is_written_and_reused(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    data = create_dataset(f"folder:{path}", "test")
    split_file = path / "split.json"
    assert data.meta["split_file"] == str(split_file) and data.meta["split_auto"] is True
    record = json.loads(split_file.read_text())
    assert record["generated_by"] == "fewshot-bench" and record["seed"] == 0
    assert [len(record[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert sorted(sum((record[s] for s in ("train", "val", "test")), [])) == [
        f"class_{c:02d}" for c in range(10)]
    assert data.class_names == record["test"]
    assert data.images.shape == (6, DECODE_SIZE, DECODE_SIZE, 3)
    stamp = split_file.stat().st_mtime_ns
    again = create_dataset(f"folder:{path}", "train")
    assert again.class_names == record["train"] and split_file.stat().st_mtime_ns == stamp
    assert auto_split([f"class_{c:02d}" for c in range(10)])["test"] == record["test"]  # seeded
    # the decoded cache lives in the user cache, not in the folder
    assert not (path / ".fewshot-cache").exists()
    hit = create_dataset(f"folder:{path}", "test")
    assert hit.meta["cache_hit"] is True and hit.meta["cache"].startswith(str(data_cache_dir(path)))


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
    assert data.meta["split_auto"] is False


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
    assert "only 2 class folder(s)" in _error(two)
    assert not (two / "split.json").exists()


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
    assert not list(data_cache_dir(path).iterdir())  # no cache, no temporary file
    # the seeded split file is complete (it does not depend on the images): kept for reuse
    assert files_under(path) - before <= {"split.json"}
    assert json.loads((path / "split.json").read_text())["test"] == split["test"]


def test_read_only_folder_puts_the_split_in_the_user_cache(tmp_path, user_cache):
    path = make_image_folder(tmp_path / "pics")
    (path / "split.json").mkdir()  # cannot be written as a file (stands in for read-only)
    data = create_dataset(f"folder:{path}", "test")
    split_file = data.meta["split_file"]
    assert split_file.startswith(str(user_cache)) and split_file.endswith("split.json")
    assert create_dataset(f"folder:{path}", "test").meta["split_file"] == split_file


def test_bench_run_on_a_folder(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    result = tiny_run(tmp_path, f"folder:{path}", None)
    assert result.exit_code == 0, explain(result)
    record = json.loads((tmp_path / "out-0" / "run.json").read_text())
    assert record["data"]["classes"] == 2 and (path / "split.json").is_file()


def test_bench_run_with_more_ways_than_classes(tmp_path):
    path = make_image_folder(tmp_path / "pics")
    result = tiny_run(tmp_path, f"folder:{path}", None, "--ways", "5")
    assert result.exit_code == 2, explain(result)
    assert "--ways 5 needs 5 classes" in result.stderr and "Traceback" not in result.output
    assert np.all([not p.name.startswith("out-") for p in tmp_path.iterdir()])
