"""tieredImageNet (Ren et al. 2018: 351/97/160 classes of ILSVRC-12 grouped by 34
high-level categories, 84x84) from learn2learn's (Ren et al.'s) pickles:

    <root>/tiered-imagenet/{train,val,test}_images_png.pkl   list of PNG-encoded images
    <root>/tiered-imagenet/{train,val,test}_labels.pkl       dict: label_specific (int per
        image), label_specific_str (class names, optional), label_general(_str)

(learn2learn calls the validation split 'validation' but its files 'val'.) The PNGs are
decoded once, at 84 x 84, into the split's cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DatasetInfo, register_dataset
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split
from .common import (how_to_get, data_error, get_key, learn2learn_datasets, load_pickle, require_dir)
from .decode import decode_all

NAME = "tiered-imagenet"
SUBDIR = "tiered-imagenet"
SIZE = 84
_VERSION = 1
_EXPECTED = ("learn2learn's tieredImageNet pickles tiered-imagenet/{train,val,test}_images_png.pkl "
             "(list of PNG bytes) and {train,val,test}_labels.pkl (dict with label_specific)")


def manual(root: Path) -> str:
    return (f"copy learn2learn's tiered-imagenet folder (train/val/test _images_png.pkl and "
            f"_labels.pkl, about 12 GB, zenodo record 7978538) to {root / SUBDIR}")


def _how(root: Path) -> str:
    return how_to_get(NAME, manual(root), root)


def locations(root: Path) -> list[Path]:
    return [root / SUBDIR]


def _folder(root: Path) -> Path:
    """`<root>/tiered-imagenet`, or the root itself when it holds the pickles."""
    if not (root / SUBDIR).exists() and (root / "train_labels.pkl").is_file():
        return root
    return root / SUBDIR


def _str(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _read_labels(path: Path, how: str) -> tuple[np.ndarray, list[str]]:
    """(labels 0..C-1 per image, class names) from a *_labels.pkl."""
    d = load_pickle(NAME, path, _EXPECTED, how)
    raw = get_key(d, "label_specific")
    try:
        raw = np.asarray(raw)
        ok = raw.ndim == 1 and raw.dtype.kind in "iu"
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise data_error(NAME, path, "not a tieredImageNet labels pickle (no label_specific "
                         "integer array)", _EXPECTED, how)
    ids = np.unique(raw)
    names_raw = get_key(d, "label_specific_str")
    names = ([_str(names_raw[i]) for i in ids]
             if isinstance(names_raw, (list, tuple, np.ndarray)) and len(ids)
             and ids.min() >= 0 and ids.max() < len(names_raw) else [f"class_{i}" for i in ids])
    return np.searchsorted(ids, raw).astype(np.int64), names


def plan(split: str, root: Path) -> SplitPlan:
    how = _how(root)
    require_dir(NAME, root, _EXPECTED, how)
    folder = _folder(root)
    require_dir(NAME, folder, _EXPECTED, how)
    images_path, labels_path = folder / f"{split}_images_png.pkl", folder / f"{split}_labels.pkl"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise data_error(NAME, path, "missing file", _EXPECTED, how)
    labels, names = _read_labels(labels_path, how)  # small: counts without decoding

    def build(alloc) -> Built:
        images = load_pickle(NAME, images_path, _EXPECTED, how)
        if not isinstance(images, (list, tuple, np.ndarray)) or len(images) != len(labels):
            n = len(images) if hasattr(images, "__len__") else "no list of"
            raise data_error(NAME, images_path, f"{n} images for {len(labels)} labels in "
                             f"{labels_path.name}", _EXPECTED, how)
        x = decode_all(images, SIZE, alloc, dataset=NAME, how=how,
                       where=lambda i: f"{images_path} (image {i})")
        return Built(x, labels, names)

    return SplitPlan(dataset=NAME, split=split, cache_name=NAME, source=folder,
                     layout="learn2learn tieredImageNet pickles", cache_home=folder,
                     inputs=[images_path, labels_path], params={"version": _VERSION, "size": SIZE},
                     build=build, n_classes=len(names), n_images=len(labels))


def download(folder: Path) -> None:
    """learn2learn's downloader (zenodo, else Google Drive; about 12 GB)."""
    TieredImagenet = learn2learn_datasets().TieredImagenet
    TieredImagenet(str(folder), mode="train", download=True)


@register_dataset(NAME, info=DatasetInfo(
    name=NAME, title="tieredImageNet (Ren et al. 2018): 351/97/160 classes, 84 px",
    locations=locations, plan=plan, manual=manual, download=download,
    download_moves={SUBDIR: SUBDIR}))
def load(split: str, root: Path) -> ImageSplit:
    return load_split(plan(split, root))
