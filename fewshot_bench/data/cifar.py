"""CIFAR-FS and FC100: few-shot splits of CIFAR-100's 100 classes (600 32x32 images each,
the archive's 500 train and 100 test images pooled).

Built from the official CIFAR-100 python archive (`<root>/cifar-100-python/{train,test,meta}`,
as torchvision downloads it) and the class lists in assets/cifar_fs_split.json and
assets/fc100_split.json (copied from ../shared/reference/splits.md; their provenance is in
the files): CIFAR-FS is Bertinetto et al.'s 64/16/20 class split, FC100 Oreshkin et al.'s
12/4/4 superclass (60/20/20 class) split. This is how torchmeta builds them too.

Also accepted, when that is what the root holds (the archive wins when both are there):
- learn2learn's CIFAR-FS folder: `<root>/cifarfs/processed/{train,val,test}/<class>/*.png`,
  or `<root>/cifarfs/cifar100/data/<class>/*.png` with
  `<root>/cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt`;
- learn2learn's (MetaOptNet's) FC100 pickles: `<root>/FC100_{train,val,test}.pickle` (or in
  `<root>/FC100/`), dicts with `data` uint8 [N, 32, 32, 3] and `labels` (CIFAR-100 fine
  label indices).
Their class lists are used as they are; `meta['split_matches_reference']` says whether they
equal the reference lists.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from . import DatasetInfo, register_dataset
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split
from .common import (how_to_get, data_error, get_key, list_images, list_subdirs, load_pickle, remap_labels,
                     require_dir)
from .decode import decode_all

ASSETS = Path(__file__).resolve().parent / "assets"
ARCHIVE_DIR = "cifar-100-python"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
L2L_CIFARFS_DIR = "cifarfs"
_VERSION = 1
_SPLIT_FILES = {"cifar-fs": "cifar_fs_split.json", "fc100": "fc100_split.json"}


@functools.lru_cache(maxsize=None)
def cifar100_classes() -> dict:
    """fine_label_names (index order), coarse_label_names and superclass membership."""
    return json.loads((ASSETS / "cifar100_classes.json").read_text())


@functools.lru_cache(maxsize=None)
def reference_split(name: str) -> dict[str, list[str]]:
    """The reference class list of each split of `name` ("cifar-fs" or "fc100")."""
    data = json.loads((ASSETS / _SPLIT_FILES[name]).read_text())
    return {s: list(data[s]) for s in ("train", "val", "test")}


def manual(root: Path) -> str:
    return (f"download {ARCHIVE_URL} and unpack it into {root} (giving "
            f"{root / ARCHIVE_DIR}/train)")


def _how(name: str, root: Path) -> str:
    return how_to_get(name, manual(root), root)


def locations(name: str, root: Path) -> list[Path]:
    if name == "cifar-fs":
        return [root / ARCHIVE_DIR, root / L2L_CIFARFS_DIR]
    return [root / ARCHIVE_DIR, root / "FC100_train.pickle", root / "FC100"]


def _fc100_pickle(root: Path, split: str) -> Path | None:
    for folder in (root, root / "FC100"):
        path = folder / f"FC100_{split}.pickle"
        if path.is_file():
            return path
    return None


def plan(name: str, split: str, root: Path) -> SplitPlan:
    """Find the layout of `name` under `root` (cheap: nothing is decoded)."""
    how = _how(name, root)
    expected = (f"the CIFAR-100 python archive unpacked as {root / ARCHIVE_DIR}/{{train,test,meta}}"
                + (", or learn2learn's CIFAR-FS folder cifarfs/" if name == "cifar-fs"
                   else ", or learn2learn's FC100_{train,val,test}.pickle"))
    require_dir(name, root, expected, how)
    archive = root / ARCHIVE_DIR
    if archive.exists():
        return _plan_archive(name, split, root, archive, how)
    if name == "cifar-fs" and (root / L2L_CIFARFS_DIR).exists():
        return _plan_l2l_cifarfs(split, root, how)
    if name == "fc100":
        pk = _fc100_pickle(root, split)
        if pk is not None:
            return _plan_fc100_pickle(split, root, pk, how)
        if _fc100_pickle(root, "train") is not None or (root / "FC100").is_dir():
            where = (root / "FC100") if (root / "FC100").is_dir() else root
            raise data_error(name, where / f"FC100_{split}.pickle", "missing file",
                             "learn2learn's FC100_train/val/test.pickle side by side", how)
    raise data_error(name, archive, "missing folder", expected, how)


# --------------------------------------------------------------------------------------
# the official CIFAR-100 python archive
# --------------------------------------------------------------------------------------

def _plan_archive(name: str, split: str, root: Path, archive: Path, how: str) -> SplitPlan:
    expected = "the CIFAR-100 python archive: cifar-100-python/train, test and meta pickles"
    require_dir(name, archive, expected, how)
    for part in ("train", "test"):
        if not (archive / part).is_file():
            raise data_error(name, archive / part, "missing file", expected, how)
    classes = sorted(reference_split(name)[split])
    inputs = [archive / "train", archive / "test"]
    if (archive / "meta").is_file():
        inputs.append(archive / "meta")

    def build(alloc) -> Built:
        fine_names = cifar100_classes()["fine_label_names"]
        if (archive / "meta").is_file():
            meta = load_pickle(name, archive / "meta", expected, how, encoding="bytes")
            names = get_key(meta, "fine_label_names")
            try:
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            except TypeError:
                names = None
            if names != fine_names:
                raise data_error(name, archive / "meta", "no CIFAR-100 fine_label_names list "
                                 "in the meta pickle", "the 100 CIFAR-100 class names in "
                                 "label order (apple, aquarium_fish, ..., worm)", how)
        images, labels = [], []
        for part in ("train", "test"):
            x, y = _read_archive_part(name, archive / part, expected, how)
            images.append(x)
            labels.append(y)
        labels_all = np.concatenate(labels)
        keep = [fine_names.index(c) for c in classes]
        idx, new = remap_labels(labels_all, keep)
        counts = np.bincount(new, minlength=len(classes))
        if (counts == 0).any():
            missing = [c for c, n in zip(classes, counts) if n == 0]
            raise data_error(name, archive, f"no images of {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''} in train or test",
                             "600 images of each of the 100 classes", how)
        x = np.concatenate(images)
        return Built(np.ascontiguousarray(x[idx]), new, classes,
                     {"split_matches_reference": True})

    return SplitPlan(dataset=name, split=split, cache_name=name, source=archive,
                     layout="CIFAR-100 python archive", cache_home=root, inputs=inputs,
                     params={"version": _VERSION, "classes": classes},
                     build=build, n_classes=len(classes))


def _read_archive_part(name: str, path: Path, expected: str, how: str):
    d = load_pickle(name, path, expected, how, encoding="bytes")
    data, fine = get_key(d, "data"), get_key(d, "fine_labels")
    try:
        data = np.asarray(data)
        fine = np.asarray(fine)
        if fine.size == 0:
            fine = fine.astype(np.int64)
        ok = (data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
              and fine.shape == (len(data),) and fine.dtype.kind in "iu"
              and (len(fine) == 0 or (fine.min() >= 0 and fine.max() < 100)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise data_error(name, path, "not a CIFAR-100 pickle", "a dict with b'data' "
                         "(uint8 N x 3072, channel-major 32x32) and b'fine_labels' (0..99)", how)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), fine.astype(np.int64)


# --------------------------------------------------------------------------------------
# learn2learn's layouts
# --------------------------------------------------------------------------------------

def _plan_l2l_cifarfs(split: str, root: Path, how: str) -> SplitPlan:
    name = "cifar-fs"
    base = root / L2L_CIFARFS_DIR
    processed = base / "processed" / split
    expected = ("learn2learn's CIFAR-FS folder: cifarfs/processed/{train,val,test}/<class>/*.png, "
                "or cifarfs/cifar100/data/<class>/*.png with "
                "cifarfs/cifar100/splits/bertinetto/{train,val,test}.txt")
    if processed.is_dir():
        class_dirs = list_subdirs(processed)
        layout, source, inputs = "learn2learn CIFAR-FS (processed)", processed, []
    else:
        data_dir = base / "cifar100" / "data"
        split_file = base / "cifar100" / "splits" / "bertinetto" / f"{split}.txt"
        require_dir(name, data_dir, expected, how)
        if not split_file.is_file():
            raise data_error(name, split_file, "missing file", expected, how)
        try:
            wanted = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise data_error(name, split_file, f"cannot read the split file ({exc})", expected,
                             how) from exc
        class_dirs = [data_dir / c for c in wanted]
        for d in class_dirs:
            if not d.is_dir():
                raise data_error(name, d, f"missing class folder named in {split_file.name}",
                                 expected, how)
        layout, source, inputs = "learn2learn CIFAR-FS (raw)", base / "cifar100", [split_file]
    classes = sorted(d.name for d in class_dirs)
    by_name = {d.name: d for d in class_dirs}
    files, labels = [], []
    for j, c in enumerate(classes):
        imgs = list_images(by_name[c])
        if not imgs:
            raise data_error(name, by_name[c], "class folder without images", expected, how)
        files += imgs
        labels += [j] * len(imgs)
    inputs = inputs + files
    ref = sorted(reference_split(name)[split])

    def build(alloc) -> Built:
        x = decode_all(files, 32, alloc, dataset=name, how=how)
        return Built(x, np.asarray(labels), classes, {"split_matches_reference": classes == ref})

    return SplitPlan(dataset=name, split=split, cache_name=name, source=source, layout=layout,
                     cache_home=root, inputs=inputs, params={"version": _VERSION, "size": 32},
                     build=build, n_classes=len(classes), n_images=len(files))


def _plan_fc100_pickle(split: str, root: Path, path: Path, how: str) -> SplitPlan:
    name = "fc100"
    expected = "learn2learn's FC100 pickle: a dict with data (uint8 N x 32 x 32 x 3) and labels"
    fine_names = cifar100_classes()["fine_label_names"]
    ref = sorted(reference_split(name)[split])

    def build(alloc) -> Built:
        d = load_pickle(name, path, expected, how, encoding="latin1")
        data, labels = get_key(d, "data"), get_key(d, "labels")
        try:
            data, labels = np.asarray(data), np.asarray(labels)
            ok = (data.dtype == np.uint8 and data.ndim == 4 and data.shape[1:] == (32, 32, 3)
                  and labels.shape == (len(data),) and labels.dtype.kind in "iu"
                  and (len(labels) == 0 or labels.min() >= 0))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise data_error(name, path, "not an FC100 pickle", expected, how)
        ids = sorted(int(v) for v in np.unique(labels))
        # MetaOptNet's pickles hold CIFAR-100 fine label indices
        names = {i: fine_names[i] if i < 100 else f"label_{i}" for i in ids}
        keep = sorted(ids, key=names.get)
        idx, new = remap_labels(labels, keep)
        classes = [names[i] for i in keep]
        return Built(np.ascontiguousarray(data[idx]), new, classes,
                     {"split_matches_reference": classes == ref})

    return SplitPlan(dataset=name, split=split, cache_name=name, source=path,
                     layout="learn2learn FC100 pickles", cache_home=path.parent, inputs=[path],
                     params={"version": _VERSION}, build=build)


# --------------------------------------------------------------------------------------
# registration and download
# --------------------------------------------------------------------------------------

def download(root: Path) -> None:
    """torchvision's CIFAR100 downloader (checks the md5) into `root`."""
    from torchvision.datasets import CIFAR100

    CIFAR100(str(root), train=True, download=True)


def _register(name: str, title: str) -> None:
    info = DatasetInfo(
        name=name, title=title,
        locations=functools.partial(locations, name),
        plan=functools.partial(plan, name),
        download=download, download_moves={ARCHIVE_DIR: ARCHIVE_DIR}, manual=manual,
    )

    @register_dataset(name, info=info)
    def load(split: str, root: Path) -> ImageSplit:
        return load_split(plan(name, split, root))


_register("cifar-fs", "CIFAR-FS (Bertinetto et al. 2019): CIFAR-100, 64/16/20 classes, 32 px")
_register("fc100", "FC100 (Oreshkin et al. 2018): CIFAR-100 by superclass, 60/20/20 classes, 32 px")
