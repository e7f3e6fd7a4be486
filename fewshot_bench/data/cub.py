"""CUB-200-2011 (Wah et al. 2011): 11,788 photos of 200 bird species, with the customary
few-shot class split of 100/50/50.

Layout (the official archive, as torchvision-style code and learn2learn unpack it):

    <root>/CUB_200_2011/   (or <root>/cubirds200/CUB_200_2011/, or the root itself)
        classes.txt               "<class id> <class folder>", ids 1..200
        images.txt                "<image id> <class folder>/<file>.jpg"
        image_class_labels.txt    "<image id> <class id>"
        images/<class folder>/<file>.jpg

Split: the one of Chen et al. 2019 ("A Closer Look at Few-shot Classification",
wyharveychen/CloserLookFewShot filelists/CUB/write_CUB_filelist.py), used by most few-shot
code bases that report 100/50/50 CUB numbers: with the 200 class folders sorted by name and
numbered i = 0..199, train = i % 2 == 0 (100 classes), val = i % 4 == 1 (50), test =
i % 4 == 3 (50). (learn2learn's CUBirds200 instead uses Meta-Dataset's 140/30/30 split, which
is not the customary one for this benchmark.)

Photos have many sizes: each is decoded once per image size, the shorter side resized to
the run's input size (`image_size`: --image-size, else the backbone's, e.g. 224; else
`common.DECODE_SIZE`) and the centre square kept, into the split's cache (`cub-224px-...`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DatasetInfo, register_dataset
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split, sized_name
from .common import how_to_get, DECODE_SIZE, data_error, learn2learn_datasets, require_dir
from .decode import decode_all

NAME = "cub"
FOLDER = "CUB_200_2011"
URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
N_CLASSES = 200
_VERSION = 1
_EXPECTED = ("the CUB-200-2011 archive unpacked as CUB_200_2011/ with classes.txt, images.txt, "
             "image_class_labels.txt and images/<class>/<file>.jpg (200 classes)")


def split_of(index: int) -> str | None:
    """Chen et al. 2019: class i (0-based, folders sorted by name) -> its split."""
    if index % 2 == 0:
        return "train"
    return "val" if index % 4 == 1 else "test"


def manual(root: Path) -> str:
    return (f"download CUB_200_2011.tgz (from {URL}) and unpack it into {root} (giving "
            f"{root / FOLDER}/images.txt)")


def _how(root: Path) -> str:
    return how_to_get(NAME, manual(root), root)


def locations(root: Path) -> list[Path]:
    return [root / FOLDER, root / "cubirds200" / FOLDER]


def _folder(root: Path) -> Path:
    for cand in (root / FOLDER, root / "cubirds200" / FOLDER, root):
        if (cand / "images.txt").is_file():
            return cand
    return root / FOLDER


def _table(path: Path, how: str) -> list[tuple[str, str]]:
    """Lines "<id> <value>" of one of CUB's index files."""
    if not path.is_file():
        raise data_error(NAME, path, "missing file", _EXPECTED, how)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise data_error(NAME, path, f"cannot read the file ({exc})", _EXPECTED, how) from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise data_error(NAME, path, f"line {n} is not '<id> <value>'", _EXPECTED, how)
        rows.append((parts[0], parts[1].strip()))
    return rows


def plan(split: str, root: Path, image_size: int | None = None) -> SplitPlan:
    how = _how(root)
    size = image_size or DECODE_SIZE
    require_dir(NAME, root, _EXPECTED, how)
    base = _folder(root)
    require_dir(NAME, base, _EXPECTED, how)
    index_files = [base / "classes.txt", base / "images.txt", base / "image_class_labels.txt"]
    classes = _table(index_files[0], how)
    if len(classes) != N_CLASSES or len({c for _, c in classes}) != N_CLASSES:
        raise data_error(NAME, index_files[0], f"{len(classes)} classes listed", _EXPECTED, how)
    class_of_id = dict(classes)
    folders = sorted(class_of_id.values())
    in_split = [c for i, c in enumerate(folders) if split_of(i) == split]
    label_of = {c: j for j, c in enumerate(in_split)}
    images = dict(_table(index_files[1], how))
    files, labels = [], []
    for image_id, class_id in _table(index_files[2], how):
        folder = class_of_id.get(class_id)
        if folder is None or image_id not in images:
            raise data_error(NAME, index_files[2], f"image {image_id} or class {class_id} is not "
                             "listed in images.txt / classes.txt", _EXPECTED, how)
        if folder in label_of:
            files.append((int(image_id), base / "images" / images[image_id], label_of[folder]))
    files.sort()
    for _, path, _ in files:
        if not path.is_file():
            raise data_error(NAME, path, "missing image listed in images.txt", _EXPECTED, how)
    paths = [p for _, p, _ in files]
    labels = np.asarray([y for _, _, y in files], dtype=np.int64)

    def build(alloc) -> Built:
        return Built(decode_all(paths, size, alloc, dataset=NAME, how=how), labels, in_split)

    return SplitPlan(dataset=NAME, split=split, cache_name=sized_name(NAME, size), source=base,
                     layout="CUB-200-2011 archive", cache_home=base, inputs=index_files + paths,
                     params={"version": _VERSION, "size": size, "split": "chen2019"},
                     build=build, n_classes=len(in_split), n_images=len(paths),
                     meta={"class_split": "Chen et al. 2019 (100/50/50)"},
                     fingerprint_size=DECODE_SIZE)


def download(folder: Path) -> None:
    """learn2learn's downloader (zenodo, else Google Drive; about 1.1 GB)."""
    CUBirds200 = learn2learn_datasets().CUBirds200
    CUBirds200(str(folder), mode="all", download=True)


@register_dataset(NAME, info=DatasetInfo(
    name=NAME, title="CUB-200-2011 birds (Chen et al. 2019 split): 100/50/50 classes, "
                     "photos stored at the run's image size",
    locations=locations, plan=plan, manual=manual, download=download,
    download_moves={f"cubirds200/{FOLDER}": FOLDER}))
def load(split: str, root: Path, image_size: int | None = None) -> ImageSplit:
    return load_split(plan(split, root, image_size))
