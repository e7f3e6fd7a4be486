"""The offline default data set "emoji": 64x64 Noto and Twemoji images, class = subcategory.

The data ship inside the package (assets/emoji64.npz, built by
scripts/build_emoji_dataset.py) because the machines this benchmark must run on reach no
data host. Classes are split into train/val/test by the fixed assets/emoji_split.json. Images carry
their code point as group (`ImageSplit.groups`), so episodes never pair the two vendors'
drawings of one emoji across support and query.
"""

from __future__ import annotations

import functools
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BenchError
from . import register_dataset
from .base import ImageSplit

ASSETS = Path(__file__).resolve().parent / "assets"
NPZ_NAME = "emoji64.npz"
SPLIT_NAME = "emoji_split.json"
_REBUILD = "Rebuild it with `python scripts/build_emoji_dataset.py` (needs npm and its registry)."
DEFAULT_IMAGE_SIZE = 128
_KEYS = ("images", "labels", "class_names", "vendor", "unified")


@functools.lru_cache(maxsize=4)
def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Decompress the npz once per process; arrays are read-only because they are shared."""
    if not path.is_file():
        raise BenchError(f"The emoji data file {path} is missing. {_REBUILD}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in _KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchError(f"The emoji data file {path} is corrupt ({exc}). {_REBUILD}") from exc
    images, labels = arrays["images"], arrays["labels"]
    n = len(images) if images.ndim == 4 else -1
    consistent = (
        images.dtype == np.uint8
        and images.shape[1:] == (64, 64, 3)
        and all(arrays[k].shape == (n,) for k in ("labels", "vendor", "unified"))
        and arrays["class_names"].ndim == 1
        and labels.dtype.kind in "iu"
        and (n == 0 or (labels.min() >= 0 and labels.max() < len(arrays["class_names"])))
    )
    if not consistent:
        raise BenchError(f"The emoji data file {path} has inconsistent arrays. {_REBUILD}")
    for array in arrays.values():
        array.setflags(write=False)
    return arrays


def _load_split(path: Path) -> dict[str, list[str]]:
    try:
        split = json.loads(path.read_text())
        return {name: list(split[name]) for name in ("train", "val", "test")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(
            f"The emoji split file {path} is missing or corrupt ({exc}). {_REBUILD}"
        ) from exc


@register_dataset("emoji")
def load_emoji(split: str, root: Path | None = None) -> ImageSplit:
    """Load one class split of the packaged emoji data set.

    `root` is normally ignored because the data ship with the package; a root holding its
    own emoji64.npz (and optionally emoji_split.json) overrides the packaged files.
    """
    npz_path = ASSETS / NPZ_NAME
    split_path = ASSETS / SPLIT_NAME
    if root is not None and (Path(root) / NPZ_NAME).exists():
        npz_path = Path(root) / NPZ_NAME
        if (Path(root) / SPLIT_NAME).exists():
            split_path = Path(root) / SPLIT_NAME
    arrays = _load_npz(npz_path.resolve())
    all_names = [str(c) for c in arrays["class_names"]]
    wanted = sorted(_load_split(split_path)[split])
    unknown = sorted(set(wanted) - set(all_names))
    if unknown:
        raise BenchError(
            f"The emoji split file {split_path} names classes missing from {npz_path}: "
            f"{', '.join(unknown)}. {_REBUILD}"
        )
    # old label -> new label within the split, -1 for classes of other splits
    remap = np.full(len(all_names), -1, dtype=np.int64)
    remap[[all_names.index(c) for c in wanted]] = np.arange(len(wanted))
    new_labels = remap[arrays["labels"]]
    keep = new_labels >= 0
    # group = the code point: each emoji is drawn by Noto and by Twemoji, and the two
    # drawings of one emoji are near-copies that must not face each other in an episode
    _, groups = np.unique(arrays["unified"][keep], return_inverse=True)
    return ImageSplit(
        dataset="emoji",
        split=split,
        images=arrays["images"][keep],
        labels=new_labels[keep],
        class_names=wanted,
        groups=groups.reshape(-1).astype(np.int64),
        meta={
            "groups": "code point (the Noto and Twemoji drawings of one emoji)",
            "vendor": arrays["vendor"][keep],
            "unified": arrays["unified"][keep],
            "source": str(npz_path),
            # 64 px drawings: 128 px input keeps ImageNet-scale features (val ProtoNet within
            # ~1 point of 224 px at 1-shot) at a third of the cost; see docs/protocol.md.
            "image_size": DEFAULT_IMAGE_SIZE,
        },
    )
