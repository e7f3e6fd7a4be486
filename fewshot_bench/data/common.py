"""Shared pieces of the file-based data sets: where data live, how a missing or broken
file is reported, and how any image becomes a uint8 RGB array of one size."""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BenchError

DATA_ENV = "FEWSHOT_DATA"  # default --data-root
SPLITS = ("train", "val", "test")
# Images of mixed sizes (CUB, image folders) are stored at one size: the shorter side is
# resized (bicubic, antialiased) and the centre square is kept. That size is the run's input
# size (`create_dataset(..., image_size=)`: --image-size, else the backbone's), so photos are
# never stored smaller than the backbone sees them; this one is for callers that do not
# say (and the size their data fingerprints are computed at, `cache.SplitPlan`).
DECODE_SIZE = 128

# Extensions PIL registers that are not plain raster images (or need external tools).
_NOT_IMAGES = {".pdf", ".eps", ".ps", ".h5", ".hdf", ".grib", ".bufr", ".mpeg", ".mpg",
               ".wmf", ".emf", ".fit", ".fits", ".iim", ".psd"}
IMAGE_EXTENSIONS = frozenset(e for e in Image.registered_extensions() if e not in _NOT_IMAGES)


def default_data_root() -> Path:
    """`$FEWSHOT_DATA` if set, else ~/data."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path("~/data").expanduser()


def resolve_root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def root_hint(root: Path) -> str:
    return (f"Pass the folder that holds it with --data-root (now {root}; the default is "
            f"${DATA_ENV}, else ~/data).")


def how_to_get(name: str, manual: str, root: Path) -> str:
    """The fix every missing-data message ends with: download, or place the files by hand."""
    return (f"Run `bench data download {name}` where a network exists, or {manual}. "
            + root_hint(root))


def data_error(dataset: str, path: Path | str, problem: str, expected: str, how: str) -> BenchError:
    """The one shape of every data error: data set, path, what is wrong, what was expected,
    how to get it."""
    return BenchError(f"{dataset}: {problem}: {path}. Expected {expected}. {how}")


def require_dir(dataset: str, path: Path, expected: str, how: str) -> Path:
    if not path.is_dir():
        problem = "not a folder" if path.exists() else "no such folder"
        raise data_error(dataset, path, problem, expected, how)
    return path


def require_file(dataset: str, path: Path, expected: str, how: str) -> Path:
    if not path.is_file():
        problem = "not a file" if path.exists() else "missing file"
        raise data_error(dataset, path, problem, expected, how)
    return path


# --------------------------------------------------------------------------------------
# pickles
# --------------------------------------------------------------------------------------

def load_pickle(dataset: str, path: Path, expected: str, how: str, *, encoding: str = "latin1"):
    """Unpickle `path`; a truncated or corrupt file becomes a BenchError.

    `encoding` applies to Python-2 pickles (CIFAR-100's python archive and MetaOptNet's
    FC100 pickles are Python 2); "bytes" keeps their str keys as bytes."""
    require_file(dataset, path, expected, how)
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding=encoding)
    except MemoryError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on a broken file
        raise data_error(dataset, path, f"cannot read the pickle ({_why(exc)})",
                         expected, "The file is truncated or corrupt; get it again. " + how) from exc


def get_key(mapping, key: str, default=None):
    """mapping[key] for str or bytes keys (Python-2 pickles load keys as either)."""
    if not isinstance(mapping, dict):
        return default
    if key in mapping:
        return mapping[key]
    return mapping.get(key.encode(), default)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------

def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited onto white."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 0
        arr = arr / hi * 255 if hi > 255 else arr
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic) and keep the centre `size` x `size`."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(source: Path | bytes | np.ndarray, size: int | None, *, dataset: str, where: str | Path,
                 how: str) -> np.ndarray:
    """Decode one image file or encoded bytes -> uint8 [size, size, 3] RGB (or the image's
    own size when `size` is None). A truncated or unreadable image is a BenchError."""
    if isinstance(source, np.ndarray):  # pickled encoders (cv2.imencode) give uint8 arrays
        source = source.tobytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with Image.open(source) as img:
            img.load()
            img = to_rgb(img)
            if size is not None:
                img = fit_square(img, size)
            return np.asarray(img, dtype=np.uint8)
    except MemoryError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        raise data_error(dataset, where, f"cannot decode the image ({_why(exc)})",
                         "a readable image file (PNG, JPEG, ...)",
                         "The file is truncated or corrupt: replace or delete it. " + how) from exc


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _entries(folder: Path, keep) -> list[Path]:
    """Entries of `folder` that `keep(entry)` accepts, sorted by name. An entry that cannot
    be inspected (a symlink loop, a permission error) is skipped with a warning that names
    it, rather than making the whole folder unreadable."""
    kept, unreadable = [], []
    with os.scandir(folder) as it:
        for e in it:
            try:
                if keep(e):
                    kept.append(Path(e.path))
            except OSError as exc:
                unreadable.append(f"{e.path} ({exc.strerror or exc})")
    if unreadable:
        shown = "; ".join(unreadable[:3]) + (f"; and {len(unreadable) - 3} more"
                                             if len(unreadable) > 3 else "")
        one = len(unreadable) == 1
        warnings.warn(f"skipped {len(unreadable)} entr{'y' if one else 'ies'} of {folder} "
                      f"that cannot be read: {shown}. The rest of the folder is used; fix or "
                      f"remove {'it' if one else 'them'} to silence this.", stacklevel=3)
    return sorted(kept, key=lambda p: p.name)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    return _entries(folder, lambda e: is_image_file(Path(e.name)) and e.is_file())


def list_subdirs(folder: Path) -> list[Path]:
    """Visible subfolders of `folder`, sorted by name."""
    return _entries(folder, lambda e: not e.name.startswith(".") and e.is_dir())


def learn2learn_datasets():
    """`learn2learn.vision.datasets`, imported without the notice its `gym` import prints."""
    import contextlib

    with contextlib.redirect_stderr(io.StringIO()):
        import learn2learn.vision.datasets as datasets
    return datasets


def remap_labels(labels: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of images whose label is in `keep` and their new labels 0..len(keep)-1 (in
    the order of `keep`)."""
    labels = np.asarray(labels, dtype=np.int64)
    table = np.full(int(max(labels.max(initial=0), max(keep, default=0))) + 1, -1, dtype=np.int64)
    table[list(keep)] = np.arange(len(keep))
    new = table[labels]
    idx = np.flatnonzero(new >= 0)
    return idx, new[idx]


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
