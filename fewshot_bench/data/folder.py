"""`folder:PATH`: any folder with one subfolder per class, images in any format PIL reads.

    PATH/<class>/<image>.{png,jpg,webp,...}
    PATH/split.json         optional: {"train": [classes], "val": [...], "test": [...]}

Nothing is written into PATH: it is the user's folder. The decoded images and the
automatic class split go to the user cache (`cache.data_cache_dir(PATH)`, under
$FEWSHOT_CACHE, else ~/.cache/fewshot-bench).

Images are converted to RGB (grayscale expanded, transparency composited onto white) and
stored square at the run's input size (shorter side resized, centre crop): `image_size`
(--image-size, else the backbone's), else `common.DECODE_SIZE`. Hidden files and folders
are ignored, as are subfolders without images.

The class split, in this order:

1. PATH/split.json when it exists, whoever wrote it (read, never written). Its keys are
   train, val and test, each a list of class folder names (older versions also wrote
   their automatic split there, with a few keys of their own: generated_by, seed, rule).
   Refused, with a message naming the file and how to fix it: an unknown key, a value that
   is not a list of names, a class in two splits, a name that is no class folder with
   images. Class folders listed in no split are left out, with a warning (leaving a class
   out on purpose is allowed). `--split-ratios` other than the default is refused next to
   it: the file is the split.
2. Otherwise the automatic split for `split_ratios` (`--split-ratios TRAIN:VAL:TEST`,
   default 0.6:0.2:0.2): classes sorted by name, shuffled with numpy's default_rng(0),
   val takes the first round(n * VAL) of the order, test the next round(n * TEST), train
   the rest (the split with the largest share takes the rounding; every split whose share
   is not 0 gets at least one class, a share of 0 gets none). It is written once to
   `data_cache_dir(PATH)/split-<ratios>.json` and reused from there, so later runs keep
   exactly these classes even when class folders are added. For the default ratios, the
   file older versions wrote to the user cache (`folder-<name>-<hash>/split.json`) is
   read too; the default gives the very class lists of those versions.

`meta['split_file']` is the file used (the run records it and copies it next to its
results); `meta['split_help']` says how to change the split (the run adds it to episode
errors such as a split with fewer classes than --ways).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .. import split_ratios as ratios_mod
from ..errors import BenchError
from ..fileio import write_atomic
from .base import ImageSplit
from .cache import Built, SplitPlan, data_cache_dir, load_split, sized_name, user_cache_dir
from .common import DECODE_SIZE, SPLITS, data_error, list_images, list_subdirs, safe_name
from .decode import decode_all

SPLIT_FILE = "split.json"
SEED = 0
GENERATOR = "fewshot-bench"
# keys an automatic split file carries besides the class lists
_META_KEYS = ("generated_by", "seed", "rule", "ratios", "folder")
_VERSION = 1
_EXPECTED = ("a folder with one subfolder of images per class (PATH/<class>/<image>), and "
             "optionally PATH/split.json listing the classes of train, val and test")
_HOW = ("Pass --dataset folder:PATH with PATH a folder whose subfolders are the classes; "
        "see `bench data list`.")
_SHAPE = 'JSON like {"train": ["cat", ...], "val": [...], "test": [...]}'


def split_sizes(n: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    """Classes per split for `n` classes and (train, val, test) shares summing to 1: each
    split round(n * share), at least 1 where the share is not 0; the split with the
    largest share (the first of them on a tie) takes the rest. ValueError when `n` is
    smaller than the number of splits with a share."""
    shares = dict(zip(SPLITS, fractions))
    wanted = [s for s in SPLITS if shares[s] > 0]
    if n < len(wanted):
        raise ValueError(f"need at least {len(wanted)} classes")
    rest = max(SPLITS, key=lambda s: (shares[s], -SPLITS.index(s)))
    sizes = {s: (max(1, round(n * shares[s])) if shares[s] > 0 else 0) for s in SPLITS}
    sizes[rest] = n - sum(v for s, v in sizes.items() if s != rest)
    while sizes[rest] < 1:  # small shares rounded up left the largest one nothing
        big = max((s for s in SPLITS if s != rest), key=lambda s: sizes[s])
        sizes[big] -= 1
        sizes[rest] += 1
    return sizes


def auto_split(classes: list[str], seed: int = SEED,
               ratios: str | None = None) -> dict[str, list[str]]:
    """Seeded class split by `ratios` (None: 0.6:0.2:0.2): val takes the first classes of
    the shuffled order, then test, then train (see `split_sizes`)."""
    sizes = split_sizes(len(classes), ratios_mod.fractions(ratios))
    order = [classes[i] for i in np.random.default_rng(seed).permutation(len(classes))]
    n_val, n_test = sizes["val"], sizes["test"]
    return {"train": sorted(order[n_val + n_test:]), "val": sorted(order[:n_val]),
            "test": sorted(order[n_val:n_val + n_test])}


def auto_split_path(path: Path, ratios: str | None = None) -> Path:
    """Where the automatic split of the folder `path` for `ratios` is kept."""
    return data_cache_dir(path) / f"split-{ratios_mod.tag(ratios)}.json"


def _legacy_split_path(path: Path) -> Path:
    """Where older versions wrote the automatic split when PATH was read-only."""
    tag = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:10]
    return user_cache_dir() / f"folder-{safe_name(path.name)[:40]}-{tag}" / SPLIT_FILE


def _fix(auto: bool) -> str:
    if auto:
        return ("Fix it, or delete it: a new seeded split is then written (runs made on "
                "this one keep a copy, split.json in their run folder).")
    return "Fix the file and rerun."


def _read_split(dataset: str, file: Path, auto: bool | None = None) -> dict:
    """The split file's contents, checked for shape: a JSON object whose keys are train,
    val and test (and an automatic split's own keys), each a list of class names."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise data_error(dataset, file, f"cannot read the split file ({exc})", _SHAPE,
                         _fix(bool(auto))) from exc
    if not isinstance(data, dict):
        raise data_error(dataset, file, "the split file is not a JSON object of class-name "
                         f"lists (it holds a {type(data).__name__})", _SHAPE,
                         _fix(bool(auto)))
    auto = data.get("generated_by") == GENERATOR if auto is None else auto
    unknown = [k for k in data if k not in SPLITS and k not in _META_KEYS]
    if unknown:
        hints = [f"'{k}' (did you mean '{close[0]}'?)" if (close := difflib.get_close_matches(
                 k, SPLITS, n=1, cutoff=0.5)) else f"'{k}'" for k in unknown]
        raise data_error(dataset, file, f"unknown key{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(hints)} in the split file",
                         'only the keys "train", "val" and "test", each a list of class '
                         "folder names", "Rename or remove the key, then rerun.")
    for s in SPLITS:
        value = data.get(s, [])
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            what = (f"a {type(value).__name__}" if not isinstance(value, list)
                    else "a list with entries that are not strings")
            raise data_error(dataset, file, f"the split file is not a JSON object of class-name "
                             f'lists: "{s}" is {what}', f'"{s}": ["class folder", ...] '
                             f"({_SHAPE})", _fix(auto))
    return data


def _listed(names: list[str], n: int = 10) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_split(dataset: str, path: Path, file: Path, split_def: dict, auto: bool,
                 images_of: dict[str, list[Path]]) -> list[str]:
    """Refuse a class in two splits or one that is no class folder with images; return
    the class folders (with images) that are in no split."""
    first: dict[str, str] = {}
    twice: dict[str, list[str]] = {}
    for s in SPLITS:
        for c in dict.fromkeys(split_def.get(s, [])):  # a repeat within one list is harmless
            if c in first:
                twice.setdefault(c, [first[c]]).append(s)
            else:
                first[c] = s
    if twice:
        where = [f"{c} ({' and '.join(ss)})" for c, ss in sorted(twice.items())]
        raise data_error(dataset, file, f"the split file puts {len(twice)} class"
                         f"{'es' if len(twice) > 1 else ''} in more than one split: "
                         f"{_listed(where)}", "each class in one split only (a class in "
                         "two splits would be both trained or validated on and tested on)",
                         "Remove each from all but one of its lists, then rerun.")
    missing = [c for c in first if not images_of.get(c)]
    if missing:
        empty = [c for c in missing if c in images_of]
        kinds = ("no such class folder" if not empty else
                 "class folders without images" if len(empty) == len(missing) else
                 "missing class folders or folders without images")
        how = ("Correct the names (they are folder names, case-sensitive) or the folders, "
               "then rerun.")
        if auto:
            how += (" The class folders changed since this automatic split was written: "
                    "delete the file to split again (runs made on it keep a copy, split.json "
                    "in their run folder).")
        raise data_error(dataset, file, f"the split file names {len(missing)} class"
                         f"{'es' if len(missing) > 1 else ''} with no images in {path} "
                         f"({kinds}): {_listed(sorted(missing))}",
                         f"every listed class to be a subfolder of {path} with images", how)
    return sorted(c for c, imgs in images_of.items() if imgs and c not in first)


def _write_split(dataset: str, path: Path, file: Path, split: dict[str, list[str]],
                 ratios: str | None) -> None:
    record = {"generated_by": GENERATOR, "seed": SEED,
              "ratios": ratios or ratios_mod.DEFAULT, "folder": os.path.abspath(path),
              "rule": "classes sorted by name, shuffled with numpy default_rng(seed); val "
                      "takes the first round(n * VAL), test the next round(n * TEST), train "
                      "the rest (the largest share takes the rounding; each share that is "
                      "not 0 gets at least one class)",
              **split}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(file, json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise BenchError(
            f"{dataset}: cannot write the automatic class split to {file} "
            f"({exc.strerror or exc}). Set $FEWSHOT_CACHE to a writable folder, or write "
            f'{path / SPLIT_FILE} yourself: {{"train": [...], "val": [...], "test": [...]}}.'
        ) from exc


def _find_split(dataset: str, path: Path, available: list[str],
                ratios: str | None) -> tuple[Path, dict, bool]:
    """(split file, its contents, whether it is an automatic split)."""
    user_file = path / SPLIT_FILE
    if user_file.is_file():
        split_def = _read_split(dataset, user_file)
        if ratios is not None:
            raise BenchError(
                f"{dataset}: --split-ratios {ratios} asks for an automatic class split, but "
                f"{user_file} exists and defines the split (a split.json in the folder is "
                "always used). Edit its lists to change the split, or move it out of the "
                "folder to use --split-ratios.")
        return user_file, split_def, split_def.get("generated_by") == GENERATOR
    auto_file = auto_split_path(path, ratios)
    for file in [auto_file] + ([_legacy_split_path(path)] if ratios is None else []):
        if file.is_file():
            return file, _read_split(dataset, file, auto=True), True
    try:
        split_def = auto_split(available, ratios=ratios)
    except ValueError:
        need = len([f for f in ratios_mod.fractions(ratios) if f > 0])
        raise data_error(
            dataset, path, f"only {len(available)} class folder(s) for an automatic split "
            f"into {need} splits (--split-ratios {ratios or ratios_mod.DEFAULT})",
            f"at least {need} class subfolders, or a split file {user_file}",
            f"Pass --split-ratios 0:0:1 to put every class in test, or write {user_file} "
            f'yourself, e.g. {{"test": {json.dumps(available)}}}.') from None
    _write_split(dataset, path, auto_file, split_def, ratios)
    return auto_file, split_def, True


def _split_help(dataset: str, path: Path, file: Path, split_def: dict, auto: bool,
                ratios: str | None) -> str:
    counts = ", ".join(f"{len(set(split_def.get(s, [])))} {s}" for s in SPLITS)
    n = sum(len(set(split_def.get(s, []))) for s in SPLITS)
    user_file = path / SPLIT_FILE
    if auto and file != user_file:
        return (f"The classes of {dataset} were split by {file} (automatic, --split-ratios "
                f"{ratios or ratios_mod.DEFAULT}: {counts} of {n} classes). To change the "
                "split, pass --split-ratios TRAIN:VAL:TEST, e.g. --split-ratios 0:0:1 to put "
                f"all {n} classes in test (a folder used only for evaluation), or copy that "
                f"file to {user_file} and edit its lists (a split.json in the folder is "
                "always used).")
    return (f"The classes of {dataset} come from {file} ({counts}). To change the split, edit "
            'its lists (e.g. every class in "test" for a folder used only for evaluation), '
            "or move it out of the folder to use an automatic split: --split-ratios "
            "TRAIN:VAL:TEST, e.g. 0:0:1 for every class in test.")


def plan(path_text: str, split: str, *, image_size: int | None = None,
         split_ratios: str | None = None) -> SplitPlan:
    dataset = f"folder:{path_text}"
    if not path_text.strip():
        raise BenchError("--dataset folder: needs a path, e.g. --dataset folder:~/pictures/birds "
                         "(one subfolder per class).")
    ratios = ratios_mod.canonical(split_ratios)
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

    split_file, split_def, auto = _find_split(dataset, path, available, ratios)
    unassigned = _check_split(dataset, path, split_file, split_def, auto, images_of)
    if unassigned:
        warnings.warn(
            f"{dataset}: {len(unassigned)} class folder(s) are in no split of {split_file} "
            f"and are not used: {_listed(unassigned)}. Add them to a list there to use them"
            + (" (or delete that automatic split file to split all classes again)."
               if auto and split_file != path / SPLIT_FILE else "."), stacklevel=2)
    wanted = split_def.get(split)
    if not wanted:
        listed = ", ".join(s for s in SPLITS if split_def.get(s)) or "nothing"
        share = (f" (--split-ratios {ratios} gives it no class)"
                 if auto and ratios is not None else "")
        raise data_error(dataset, split_file, f"no '{split}' classes in the split file{share}",
                         f'a "{split}" list of class folder names',
                         f"Pick another --split (it lists: {listed}), or " +
                         ("add them to the file." if not auto or split_file == path / SPLIT_FILE
                          else "pass --split-ratios with a share for it."))
    classes = sorted(set(wanted))
    files, labels = [], []
    for j, c in enumerate(classes):
        files += images_of[c]
        labels += [j] * len(images_of[c])

    def build(alloc) -> Built:
        x = decode_all(files, size, alloc, dataset=dataset, how=_HOW)
        return Built(x, np.asarray(labels, dtype=np.int64), classes)

    meta = {"split_file": str(split_file), "split_auto": auto,
            "split_help": _split_help(dataset, path, split_file, split_def, auto, ratios),
            "unassigned_classes": unassigned, "skipped_folders": skipped,
            # image i's file, relative to the folder: a groups file may name images so
            "files": [Path(f).relative_to(path).as_posix() for f in files]}
    if auto and split_file != path / SPLIT_FILE:
        meta["split_ratios"] = ratios or ratios_mod.DEFAULT
    name = "folder" if ratios is None else f"folder-{ratios_mod.tag(ratios)}"
    return SplitPlan(dataset=dataset, split=split, cache_name=sized_name(name, size),
                     source=path, layout="image folder (one subfolder per class)",
                     cache_home=path, inputs=[split_file] + files,
                     params={"version": _VERSION, "size": size, "classes": classes},
                     build=build, n_classes=len(classes), n_images=len(files), meta=meta,
                     fingerprint_size=DECODE_SIZE)


def load_folder(path_text: str, split: str, *, image_size: int | None = None,
                split_ratios: str | None = None) -> ImageSplit:
    return load_split(plan(path_text, split, image_size=image_size, split_ratios=split_ratios))
