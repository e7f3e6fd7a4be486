"""`bench data list` and `bench data download` (downloaders replaced: no test touches the
network)."""

from __future__ import annotations

import sys
import types
import urllib.error

import pytest

from fewshot_bench.data import create_dataset, dataset_info
from test_data_fakes import (MINI_FILES, explain, files_under, make_cifar100, make_cub,
                             make_mini_imagenet, make_omniglot, make_tiered_imagenet, run_bench)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)


def _block(text: str, name: str) -> str:
    """The lines `bench data list` prints for one data set."""
    start = text.index(f"\n{name}: ")
    end = text.find("\n\n", start + 1)
    return text[start:end if end > 0 else None]


# --------------------------------------------------------------------------------------
# bench data list
# --------------------------------------------------------------------------------------

def test_list_with_everything_present(tmp_path):
    root = tmp_path / "data"
    make_cifar100(root)
    make_mini_imagenet(root)
    make_tiered_imagenet(root)
    make_cub(root, per_class=2)
    make_omniglot(root)
    result = run_bench(tmp_path, "data", "list", "--data-root", str(root))
    assert result.exit_code == 0, explain(result)
    out = result.stdout
    assert out.startswith(f"data root: {root}  [--data-root]")
    cifar = _block(out, "cifar-fs")
    assert "present: CIFAR-100 python archive" in cifar
    assert "train      64 classes, images: not decoded yet" in cifar  # no pickle opened
    assert "val        16 classes" in cifar and "test       20 classes" in cifar
    assert "train      60 classes" in _block(out, "fc100")
    assert "test       50 classes, 100 images" in _block(out, "cub")
    assert "val        5 classes, 15 images" in _block(out, "omniglot")
    assert "train      3 classes, 9 images" in _block(out, "tiered-imagenet")
    mini = _block(out, "mini-imagenet")
    assert "present" in mini and "classes: not decoded yet, images: not decoded yet" in mini
    assert "train      29 classes" in _block(out, "emoji")
    assert "folder:PATH" in out
    # once decoded, the counts come from the cache
    create_dataset("mini-imagenet", "test", root)
    create_dataset("cifar-fs", "test", root)
    out = run_bench(tmp_path, "data", "list", "--data-root", str(root)).stdout
    assert "test       3 classes, 9 images" in _block(out, "mini-imagenet")
    assert "test       20 classes, 60 images" in _block(out, "cifar-fs")


def test_list_with_nothing_there_uses_fewshot_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "empty"))
    result = run_bench(tmp_path, "data", "list")
    assert result.exit_code == 0, explain(result)
    assert result.stdout.startswith(f"data root: {tmp_path / 'empty'}  [$FEWSHOT_DATA]")
    for name in ("cifar-fs", "fc100", "mini-imagenet", "tiered-imagenet", "cub", "omniglot"):
        block = _block(result.stdout, name)
        assert "files      missing" in block and f"bench data download {name}" in block, block
        assert str(tmp_path / "empty") in block


def test_list_default_root_is_home_data(tmp_path):
    result = run_bench(tmp_path, "data", "list")
    assert result.stdout.startswith(f"data root: {tmp_path / 'home' / 'data'}  [default")


def test_list_reports_a_broken_layout(tmp_path):
    root = tmp_path / "data"
    (root / "cifar-100-python").mkdir(parents=True)
    block = _block(run_bench(tmp_path, "data", "list", "--data-root", str(root)).stdout, "cifar-fs")
    assert "incomplete or unreadable" in block
    assert f"problem    cifar-fs: missing file: {root / 'cifar-100-python' / 'train'}" in block


# --------------------------------------------------------------------------------------
# bench data download
# --------------------------------------------------------------------------------------

class FakeCIFAR100:
    """Stands in for torchvision.datasets.CIFAR100: 'downloads' the fake archive."""

    calls = 0

    def __init__(self, root, train=True, download=False, **kw):
        assert download
        type(self).calls += 1
        print("Downloading https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
        make_cifar100(__import__("pathlib").Path(root))
        (__import__("pathlib").Path(root) / "cifar-100-python.tar.gz").write_bytes(b"tar")


class OfflineCIFAR100:
    def __init__(self, root, **kw):
        (__import__("pathlib").Path(root) / "cifar-100-python.tar.gz").write_bytes(b"part")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_download_then_already_present(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    root = tmp_path / "data"
    result = run_bench(tmp_path, "data", "download", "fc100", "--data-root", str(root))
    assert result.exit_code == 0, explain(result)
    assert result.stdout.strip() == f"fc100: downloaded to {root / 'cifar-100-python'}."
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-python"]  # no temp, no tarball
    assert create_dataset("cifar-fs", "test", root).num_classes == 20
    result = run_bench(tmp_path, "data", "download", "cifar-fs", "--data-root", str(root))
    assert result.exit_code == 0 and "already present" in result.stdout
    assert FakeCIFAR100.calls == 1


def test_download_offline_says_so_in_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", OfflineCIFAR100)
    root = tmp_path / "data"
    result = run_bench(tmp_path, "data", "download", "cifar-fs", "--data-root", str(root))
    assert result.exit_code == 2, explain(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cifar-fs: download failed (URLError")
    assert "network" in lines[0] and "cifar-100-python.tar.gz" in lines[0]
    assert "Traceback" not in result.output
    assert files_under(root) == set()  # the partial download is gone


def _fake_learn2learn(monkeypatch, **classes):
    pkg = types.ModuleType("learn2learn")
    vision = types.ModuleType("learn2learn.vision")
    datasets = types.ModuleType("learn2learn.vision.datasets")
    for name, cls in classes.items():
        setattr(datasets, name, cls)
    pkg.vision, vision.datasets = vision, datasets
    monkeypatch.setitem(sys.modules, "learn2learn", pkg)
    monkeypatch.setitem(sys.modules, "learn2learn.vision", vision)
    monkeypatch.setitem(sys.modules, "learn2learn.vision.datasets", datasets)


def test_download_through_learn2learn(tmp_path, monkeypatch):
    modes = []

    class MiniImagenet:
        def __init__(self, root, mode="train", download=False):
            modes.append(mode)
            if mode == "test":
                make_mini_imagenet(__import__("pathlib").Path(root))

    _fake_learn2learn(monkeypatch, MiniImagenet=MiniImagenet)
    root = tmp_path / "data"
    result = run_bench(tmp_path, "data", "download", "mini-imagenet", "--data-root", str(root))
    assert result.exit_code == 0, explain(result)
    assert modes == ["train", "validation", "test"]
    assert sorted(p.name for p in root.iterdir()) == sorted(MINI_FILES.values())


def test_download_learn2learn_offline_and_missing(tmp_path, monkeypatch):
    class ConnectionError(OSError):  # what requests raises, by name
        pass

    class CUBirds200:
        def __init__(self, root, mode="all", download=False):
            make_cub(__import__("pathlib").Path(root) / "cubirds200", per_class=1)  # half done
            raise ConnectionError("HTTPSConnectionPool(host='zenodo.org', port=443): Max "
                                  "retries exceeded\nwith url: /record/8000562")

    _fake_learn2learn(monkeypatch, CUBirds200=CUBirds200)
    root = tmp_path / "data"
    result = run_bench(tmp_path, "data", "download", "cub", "--data-root", str(root))
    assert result.exit_code == 2, explain(result)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "ConnectionError: HTTPSConnectionPool" in result.stderr and "network" in result.stderr
    assert files_under(root) == set()
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # not installed
    result = run_bench(tmp_path, "data", "download", "tiered-imagenet", "--data-root", str(root))
    assert result.exit_code == 2 and "needs learn2learn" in result.stderr, explain(result)


def test_download_other_names(tmp_path):
    result = run_bench(tmp_path, "data", "download", "emoji")
    assert result.exit_code == 0 and "nothing to download" in result.stdout
    result = run_bench(tmp_path, "data", "download", "imagenet-21k")
    assert result.exit_code == 2 and "Unknown data set 'imagenet-21k'" in result.stderr
    result = run_bench(tmp_path, "data", "download", f"folder:{tmp_path}")
    assert result.exit_code == 2 and "local folder" in result.stderr


def test_every_file_data_set_can_be_downloaded():
    for name in ("cifar-fs", "fc100", "mini-imagenet", "tiered-imagenet", "cub", "omniglot"):
        info = dataset_info(name)
        assert info is not None and info.download is not None and info.download_moves
