"""miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split: 64/16/20 classes of 600
84x84 images) from learn2learn's pickles:

    <root>/mini-imagenet-cache-{train,validation,test}.pkl   (or in <root>/mini-imagenet/)

each a dict with `image_data` (uint8 [N, 84, 84, 3]) and `class_dict` (WordNet id -> list
of row indices). The class lists are used as the files give them;
`meta['split_matches_reference']` says whether they equal assets/mini_imagenet_split.json
(the Ravi & Larochelle lists from ../shared/reference/splits.md).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from . import DatasetInfo, register_dataset
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split
from .common import (how_to_get, data_error, get_key, learn2learn_datasets, load_pickle, require_dir)

NAME = "mini-imagenet"
SUBDIR = "mini-imagenet"
FILES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
         "test": "mini-imagenet-cache-test.pkl"}
ASSETS = Path(__file__).resolve().parent / "assets"
_VERSION = 1
_EXPECTED = ("learn2learn's miniImageNet pickles mini-imagenet-cache-{train,validation,test}.pkl, "
             "dicts with image_data (uint8 N x 84 x 84 x 3) and class_dict (class -> indices)")


@functools.lru_cache(maxsize=None)
def reference_split() -> dict[str, list[str]]:
    data = json.loads((ASSETS / "mini_imagenet_split.json").read_text())
    return {s: list(data[s]) for s in ("train", "val", "test")}


def manual(root: Path) -> str:
    return (f"copy learn2learn's {', '.join(FILES.values())} into {root} (they are on "
            "zenodo record 7978538)")


def _how(root: Path) -> str:
    return how_to_get(NAME, manual(root), root)


def locations(root: Path) -> list[Path]:
    return [root / FILES["train"], root / SUBDIR]


def plan(split: str, root: Path) -> SplitPlan:
    how = _how(root)
    require_dir(NAME, root, _EXPECTED, how)
    path = next((d / FILES[split] for d in (root, root / SUBDIR) if (d / FILES[split]).is_file()),
                root / FILES[split])
    if not path.is_file():
        raise data_error(NAME, path, "missing file", _EXPECTED, how)
    ref = sorted(reference_split()[split])

    def build(alloc) -> Built:
        d = load_pickle(NAME, path, _EXPECTED, how)
        images, class_dict = get_key(d, "image_data"), get_key(d, "class_dict")
        bad = data_error(NAME, path, "not a miniImageNet pickle", _EXPECTED, how)
        if not isinstance(images, np.ndarray) or not isinstance(class_dict, dict):
            raise bad
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise bad
        n = len(images)
        labels = np.full(n, -1, dtype=np.int64)
        classes = sorted(str(k.decode() if isinstance(k, bytes) else k) for k in class_dict)
        by_name = {str(k.decode() if isinstance(k, bytes) else k): v for k, v in class_dict.items()}
        for j, c in enumerate(classes):
            try:
                idx = np.asarray(by_name[c], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise bad from None
            if idx.size == 0 or idx.min() < 0 or idx.max() >= n or (labels[idx] >= 0).any():
                raise data_error(NAME, path, f"class_dict entry {c} lists missing or repeated rows",
                                 _EXPECTED, how)
            labels[idx] = j
        keep = np.flatnonzero(labels >= 0)
        return Built(np.ascontiguousarray(images[keep]), labels[keep], classes,
                     {"split_matches_reference": classes == ref})

    return SplitPlan(dataset=NAME, split=split, cache_name=NAME, source=path,
                     layout="learn2learn miniImageNet pickles", cache_home=path.parent,
                     inputs=[path], params={"version": _VERSION}, build=build)


def download(folder: Path) -> None:
    """learn2learn's downloader (zenodo, Dropbox or Google Drive), one pickle per split."""
    MiniImagenet = learn2learn_datasets().MiniImagenet
    for mode in ("train", "validation", "test"):
        MiniImagenet(str(folder), mode=mode, download=True)


@register_dataset(NAME, info=DatasetInfo(
    name=NAME, title="miniImageNet (Ravi & Larochelle split): 64/16/20 classes, 84 px",
    locations=locations, plan=plan, manual=manual, download=download,
    download_moves={f: f for f in FILES.values()}))
def load(split: str, root: Path) -> ImageSplit:
    return load_split(plan(split, root))
