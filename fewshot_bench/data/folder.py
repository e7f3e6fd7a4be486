"""`folder:PATH`: any folder with one subfolder per class, images in any format PIL reads.

    PATH/<class>/<image>.{png,jpg,webp,...}
    PATH/split.json         optional: {"train": [classes], "val": [...], "test": [...]}

Images are converted to RGB (grayscale expanded, transparency composited onto white) and
stored square at the run's input size (shorter side resized, centre crop): `image_size`
(--image-size, else the backbone's), else `common.DECODE_SIZE`. Hidden files
and folders are ignored, as are subfolders without images.

Without a split file the classes are split automatically: sorted by name, shuffled with
numpy's default_rng(0), then 60% train, 20% val, 20% test (at least one class each). The
split is written as PATH/split.json (or, when PATH is read-only, to the user cache folder)
so the next run and other people reuse exactly the same classes; its location is
`meta['split_file']`, for the run to record and copy next to its results.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..errors import BenchError
from ..fileio import write_atomic
from .base import ImageSplit
from .cache import Built, SplitPlan, load_split, sized_name, user_cache_dir
from .common import DECODE_SIZE, SPLITS, data_error, list_images, list_subdirs, safe_name
from .decode import decode_all

SPLIT_FILE = "split.json"
SEED = 0
FRACTIONS = {"val": 0.2, "test": 0.2}  # the rest is train
_VERSION = 1
_EXPECTED = ("a folder with one subfolder of images per class (PATH/<class>/<image>), and "
             "optionally PATH/split.json listing the classes of train, val and test")
_HOW = ("Pass --dataset folder:PATH with PATH a folder whose subfolders are the classes; "
        "see `bench data list`.")


def auto_split(classes: list[str], seed: int = SEED) -> dict[str, list[str]]:
    """Seeded class split: 60/20/20 (train gets the rounding), at least one class each."""
    if len(classes) < 3:
        raise ValueError("need at least 3 classes")
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n = len(order)
    n_val = max(1, round(n * FRACTIONS["val"]))
    n_test = max(1, round(n * FRACTIONS["test"]))
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def _fallback_split_path(path: Path) -> Path:
    tag = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:10]
    return user_cache_dir() / f"folder-{safe_name(path.name)[:40]}-{tag}" / SPLIT_FILE


def _read_split(dataset: str, file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise data_error(dataset, file, f"cannot read the split file ({exc})",
                         'JSON like {"train": ["cat", ...], "val": [...], "test": [...]}',
                         "Fix or delete it (a new seeded split is then written).") from exc
    ok = isinstance(data, dict) and all(
        isinstance(data.get(s, []), list) and all(isinstance(c, str) for c in data.get(s, []))
        for s in SPLITS)
    if not ok:
        raise data_error(dataset, file, "the split file is not a JSON object of class-name lists",
                         'JSON like {"train": ["cat", ...], "val": [...], "test": [...]}',
                         "Fix or delete it (a new seeded split is then written).")
    return data


def _write_split(path: Path, split: dict[str, list[str]]) -> Path:
    record = {"generated_by": "fewshot-bench", "seed": SEED,
              "rule": "classes sorted by name, shuffled with numpy default_rng(seed); "
                      "20% val, 20% test, the rest train",
              **split}
    text = json.dumps(record, indent=2) + "\n"
    for target in (path / SPLIT_FILE, _fallback_split_path(path)):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, text)
            return target
        except OSError:
            continue
    raise BenchError(f"Cannot write the automatic class split of {path}: neither {path} nor "
                     f"{_fallback_split_path(path).parent} is writable. Write {path / SPLIT_FILE} "
                     'yourself: {"train": [...], "val": [...], "test": [...]}.')


def plan(path_text: str, split: str, *, image_size: int | None = None) -> SplitPlan:
    dataset = f"folder:{path_text}"
    if not path_text.strip():
        raise BenchError("--dataset folder: needs a path, e.g. --dataset folder:~/pictures/birds "
                         "(one subfolder per class).")
    size = image_size or DECODE_SIZE
    path = Path(path_text).expanduser()
    if not path.is_dir():
        problem = "not a folder" if path.exists() else "no such folder"
        raise data_error(dataset, path, problem, _EXPECTED, _HOW)
    try:
        subdirs = list_subdirs(path)
        images_of = {d.name: list_images(d) for d in subdirs}
    except OSError as exc:
        raise data_error(dataset, path, f"cannot list the folder ({exc.strerror})",
                         _EXPECTED, _HOW) from exc
    available = sorted(c for c, imgs in images_of.items() if imgs)
    skipped = sorted(c for c, imgs in images_of.items() if not imgs)
    if not available:
        loose = list_images(path)
        problem = (f"{len(loose)} images but no class subfolders" if loose
                   else "no subfolders with images")
        raise data_error(dataset, path, problem, _EXPECTED, _HOW)

    split_file = path / SPLIT_FILE
    if not split_file.is_file() and _fallback_split_path(path).is_file():
        split_file = _fallback_split_path(path)
    auto = False
    if split_file.is_file():
        split_def = _read_split(dataset, split_file)
        auto = split_def.get("generated_by") == "fewshot-bench"
    else:
        if len(available) < 3:
            raise data_error(dataset, path, f"only {len(available)} class folder(s) for an "
                             "automatic train/val/test split", "at least 3 class subfolders, or "
                             f"a split file {split_file}",
                             f'Write {split_file} yourself, e.g. {{"test": {json.dumps(available)}}}.')
        split_def = auto_split(available)
        split_file = _write_split(path, split_def)
        auto = True
    wanted = split_def.get(split)
    if not wanted:
        raise data_error(dataset, split_file, f"no '{split}' classes in the split file",
                         f'a "{split}" list of class folder names',
                         f"Add them, or pick another --split (it lists: "
                         f"{', '.join(s for s in SPLITS if split_def.get(s)) or 'nothing'}).")
    classes = sorted(set(wanted))
    missing = [c for c in classes if c not in images_of or not images_of[c]]
    if missing:
        raise data_error(dataset, split_file, f"the {split} split names class folders that are "
                         f"missing or hold no images: {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}",
                         f"every listed class to be a subfolder of {path} with images",
                         "Fix the split file or the folders (delete an automatic split file to "
                         "split again).")
    files, labels = [], []
    for j, c in enumerate(classes):
        files += images_of[c]
        labels += [j] * len(images_of[c])
    assigned = {c for s in SPLITS for c in split_def.get(s, [])}

    def build(alloc) -> Built:
        x = decode_all(files, size, alloc, dataset=dataset, how=_HOW)
        return Built(x, np.asarray(labels, dtype=np.int64), classes)

    return SplitPlan(dataset=dataset, split=split, cache_name=sized_name("folder", size),
                     source=path, layout="image folder (one subfolder per class)",
                     cache_home=path, inputs=[split_file] + files,
                     params={"version": _VERSION, "size": size, "classes": classes},
                     fingerprint_size=DECODE_SIZE,
                     build=build, n_classes=len(classes), n_images=len(files),
                     meta={"split_file": str(split_file), "split_auto": auto,
                           "unassigned_classes": sorted(set(available) - assigned),
                           "skipped_folders": skipped})


def load_folder(path_text: str, split: str, *, image_size: int | None = None) -> ImageSplit:
    return load_split(plan(path_text, split, image_size=image_size))
