"""Omniglot (Lake et al. 2015): 1,623 handwritten characters of 50 alphabets, 20 drawings
each (105 x 105 binary PNGs, converted to RGB), in torchvision's layout:

    <root>/omniglot-py/images_background/<alphabet>/<character>/*.png   (30 alphabets, 964)
    <root>/omniglot-py/images_evaluation/<alphabet>/<character>/*.png   (20 alphabets, 659)

Split: Lake's background/evaluation split, with the validation alphabets of Meta-Dataset
(Triantafillou et al. 2020): test = the 20 evaluation alphabets (659 characters); val = the
5 smallest background alphabets (81 characters); train = the other 25 background alphabets
(883 characters). A class is one character, named "<alphabet>/<character>".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DatasetInfo, register_dataset
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split
from .common import how_to_get, data_error, list_images, list_subdirs, require_dir
from .decode import decode_all

NAME = "omniglot"
FOLDER = "omniglot-py"
SIZE = 105
BACKGROUND, EVALUATION = "images_background", "images_evaluation"
URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
# Meta-Dataset's validation alphabets: the 5 background alphabets with the fewest
# characters (14, 14, 16, 17 and 20).
VAL_ALPHABETS = (
    "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Ojibwe_(Canadian_Aboriginal_Syllabics)",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Tagalog",
    "Alphabet_of_the_Magi",
)
_VERSION = 1
_EXPECTED = ("torchvision's Omniglot folders omniglot-py/images_background and "
             "images_evaluation, each <alphabet>/<character>/*.png")


def manual(root: Path) -> str:
    return (f"download images_background.zip and images_evaluation.zip from {URL} and unzip "
            f"both into {root / FOLDER}")


def _how(root: Path) -> str:
    return how_to_get(NAME, manual(root), root)


def locations(root: Path) -> list[Path]:
    return [root / FOLDER / BACKGROUND, root / FOLDER / EVALUATION]


def _base(root: Path) -> Path:
    if not (root / FOLDER).exists() and (root / BACKGROUND).is_dir():
        return root  # the root is the omniglot-py folder itself
    return root / FOLDER


def plan(split: str, root: Path) -> SplitPlan:
    how = _how(root)
    require_dir(NAME, root, _EXPECTED, how)
    base = _base(root)
    part = require_dir(NAME, base / (EVALUATION if split == "test" else BACKGROUND), _EXPECTED, how)
    alphabets = list_subdirs(part)
    if split == "train":
        alphabets = [a for a in alphabets if a.name not in VAL_ALPHABETS]
    elif split == "val":
        alphabets = [a for a in alphabets if a.name in VAL_ALPHABETS]
    if not alphabets:
        raise data_error(NAME, part, f"no alphabet folders for the {split} split", _EXPECTED, how)
    classes, files, labels = [], [], []
    for alphabet in alphabets:
        for character in list_subdirs(alphabet):
            imgs = list_images(character)
            if not imgs:
                raise data_error(NAME, character, "character folder without images",
                                 _EXPECTED, how)
            labels += [len(classes)] * len(imgs)
            classes.append(f"{alphabet.name}/{character.name}")
            files += imgs
    if not classes:
        raise data_error(NAME, part, "no character folders", _EXPECTED, how)

    def build(alloc) -> Built:
        x = decode_all(files, SIZE, alloc, dataset=NAME, how=how)
        return Built(x, np.asarray(labels, dtype=np.int64), classes)

    return SplitPlan(dataset=NAME, split=split, cache_name=NAME, source=part,
                     layout="torchvision Omniglot folders", cache_home=base, inputs=files,
                     params={"version": _VERSION, "size": SIZE, "val": list(VAL_ALPHABETS)},
                     build=build, n_classes=len(classes), n_images=len(files),
                     meta={"class_split": "background/evaluation, Meta-Dataset val alphabets"})


def download(folder: Path) -> None:
    """torchvision's downloader (both halves, md5-checked)."""
    from torchvision.datasets import Omniglot

    Omniglot(str(folder), background=True, download=True)
    Omniglot(str(folder), background=False, download=True)


@register_dataset(NAME, info=DatasetInfo(
    name=NAME, title="Omniglot (Lake et al. 2015): 883/81/659 characters, 105 px",
    locations=locations, plan=plan, manual=manual, download=download,
    download_moves={f"{FOLDER}/{BACKGROUND}": f"{FOLDER}/{BACKGROUND}",
                    f"{FOLDER}/{EVALUATION}": f"{FOLDER}/{EVALUATION}"}))
def load(split: str, root: Path) -> ImageSplit:
    return load_split(plan(split, root))
