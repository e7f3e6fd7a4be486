"""Data set registry: one entry point,
`create_dataset(name, split, root=None, *, image_size=None, split_ratios=None)`.

A loader is `(split, root) -> ImageSplit`. File-based data sets also register a
`DatasetInfo` (where they look, a cheap plan of each split, how to download them), which
`bench data list` and `bench data download` use. `folder:PATH` names any folder with one
subfolder per class. `root=None` means `$FEWSHOT_DATA`, else ~/data (emoji ignores it).

`image_size`: the input size the run will use. The photo sets of mixed sizes (CUB, folders)
are decoded at it, so they are never stored smaller than the backbone sees them; None keeps
`common.DECODE_SIZE` (128). Other data sets have one size and ignore it. `split_ratios`
(TRAIN:VAL:TEST) shares the classes of a folder's automatic split (`folder.py`); refused for
the other data sets, whose class splits are fixed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import split_ratios as _ratios
from ..errors import BenchError
from .base import ImageSplit
from .common import DATA_ENV, default_data_root, resolve_root

FOLDER_PREFIX = "folder:"

# name -> loader(split, root) -> ImageSplit
_DATASETS: dict[str, Callable[[str, Path | None], ImageSplit]] = {}
_INFO: dict[str, "DatasetInfo"] = {}
# data sets whose loader gets the root only when the user gave one (they ship with the package)
_PACKAGED = {"emoji"}
# data sets whose loader takes `image_size`: photos decoded at the run's input size
_SIZED = {"cub"}


@dataclass
class DatasetInfo:
    """What `bench data list/download` need to know about a file-based data set."""

    name: str
    title: str  # one line: what it is
    locations: Callable[[Path], list[Path]]  # root -> the paths it looks at
    plan: Callable[[str, Path], object]  # (split, root) -> cache.SplitPlan; cheap
    manual: Callable[[Path], str]  # root -> how to put the files there by hand
    download: Callable[[Path], None] | None = None  # fetch into a (temporary) folder
    # paths the download creates in that folder -> where they go under the root
    download_moves: dict[str, str] = field(default_factory=dict)


def register_dataset(name: str, info: DatasetInfo | None = None):
    def wrap(fn: Callable[[str, Path | None], ImageSplit]):
        _DATASETS[name] = fn
        if info is not None:
            _INFO[name] = info
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_info(name: str) -> DatasetInfo | None:
    return _INFO.get(name)


def _unknown(name: str) -> BenchError:
    return BenchError(
        f"Unknown data set '{name}'. Known data sets: {', '.join(list_datasets())}, or "
        f"folder:PATH for a folder with one subfolder per class. Pass one of them with --dataset."
    )


def create_dataset(name: str, split: str, root: str | Path | None = None, *,
                   image_size: int | None = None, split_ratios: str | None = None) -> ImageSplit:
    is_folder = name.startswith(FOLDER_PREFIX)
    if not is_folder and name not in _DATASETS:
        raise _unknown(name)
    if split not in ("train", "val", "test"):
        raise BenchError(f"Unknown split '{split}'. Use --split train, val or test.")
    if _ratios.canonical(split_ratios) is not None and not is_folder:
        raise BenchError(f"--split-ratios applies to folder:PATH data sets only: {name} has a "
                         "fixed class split. Leave --split-ratios out.")
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, numbers.Integral) or image_size < 1):
        raise BenchError(f"The image size must be a positive number of pixels (got {image_size!r}).")
    size = None if image_size is None else int(image_size)
    if name in _PACKAGED:
        return _DATASETS[name](split, Path(root).expanduser() if root is not None else None)
    try:
        if is_folder:
            from .folder import load_folder

            return load_folder(name[len(FOLDER_PREFIX):], split, image_size=size,
                               split_ratios=split_ratios)
        if name in _SIZED:
            return _DATASETS[name](split, resolve_root(root), image_size=size)
        return _DATASETS[name](split, resolve_root(root))
    except OSError as exc:  # permissions, a disk error: still a message, not a traceback
        where = exc.filename or (name[len(FOLDER_PREFIX):] if is_folder else resolve_root(root))
        raise BenchError(f"{name}: cannot read {where} ({exc.strerror or exc}). Check that the "
                         "files are readable, or get the data set again.") from exc


from . import emoji  # noqa: E402,F401  (registers "emoji")
from . import cifar, cub, mini_imagenet, omniglot, tiered_imagenet  # noqa: E402,F401

__all__ = ["DATA_ENV", "FOLDER_PREFIX", "DatasetInfo", "ImageSplit", "create_dataset",
           "dataset_info", "default_data_root", "list_datasets", "register_dataset"]
