"""Decoded-split cache: a second load of a split maps a uint8 array instead of decoding
thousands of images (or unpickling hundreds of MB) again.

Each split is cached as three files in the user cache folder (`user_cache_dir()`:
`$FEWSHOT_CACHE`, else `$XDG_CACHE_HOME/fewshot-bench`, else ~/.cache/fewshot-bench), in one
subfolder per data folder (`data_cache_dir`: its name plus a hash of its absolute path, so
two folders never share one). Nothing is written next to the data: the data folder is the
user's. Caches that older versions wrote into `<data folder>/.fewshot-cache/` are still
read (never written), so they need not be decoded again:

    <name>-<split>-<key>.images.npy   uint8 [N, H, W, 3], memory-mapped when read
    <name>-<split>-<key>.labels.npy   int64 [N]
    <name>-<split>-<key>.json         class names, counts, layout; written last

`key` hashes the loader version, its parameters (split lists, decode size) and the size
and modification time of every source file, so a changed file means a new decode. Photo
sets decoded at the run's image size (CUB, folders) put the size in `<name>` too
(`cub-224px`), so caches of two sizes live side by side. Every
file appears under its final name only when complete (temporary file + rename), and a
cache that fails any check is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BenchError
from ..fileio import atomic_open, write_atomic
from .base import ImageSplit
from .common import DECODE_SIZE, safe_name

CACHE_VERSION = 1
CACHE_DIRNAME = ".fewshot-cache"  # where older versions cached, next to the data: read only
CACHE_ENV = "FEWSHOT_CACHE"

Allocator = Callable[[int, int, int], np.ndarray]


@dataclass
class Built:
    """What a loader decodes: images (uint8 [N, H, W, 3]), labels 0..C-1, class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict = field(default_factory=dict)  # JSON-serialisable; kept in the cache


@dataclass
class SplitPlan:
    """Everything needed to load one split, found without decoding anything."""

    dataset: str  # the name the user typed (e.g. "cub", "folder:/x/y")
    split: str
    cache_name: str  # short file-name stem ("cub", "folder")
    source: Path  # the file or folder the split comes from (shown to the user)
    layout: str  # human description of the on-disk layout found
    cache_home: Path  # the data folder the cache belongs to (names its `data_cache_dir`)
    inputs: list[Path]  # files whose size + mtime key the cache
    params: dict  # everything else the decoded result depends on
    build: Callable[[Allocator], Built]
    n_classes: int | None = None  # known without decoding
    n_images: int | None = None  # known without decoding (None: only once decoded)
    meta: dict = field(default_factory=dict)  # extra ImageSplit.meta
    # Decoded at a size the run chose (not one fixed by the data): the split's fingerprint is
    # that of the same images at this size, so one episode file serves every --image-size
    # (and files made when these sets were always decoded at 128 px stay valid).
    fingerprint_size: int | None = None


@dataclass
class SizedSplit(ImageSplit):
    """An ImageSplit decoded at the run's image size (see `SplitPlan.fingerprint_size`)."""

    fingerprint_size: int = DECODE_SIZE

    def fingerprint(self) -> str:
        s = self.fingerprint_size
        stand_in = copy.copy(self)  # the same labels and names; images of the canonical size
        stand_in.images = np.broadcast_to(np.zeros((), np.uint8), (len(self.images), s, s, 3))
        return ImageSplit.fingerprint(stand_in)


def user_cache_dir() -> Path:
    """The one folder every cache of fewshot-bench lives under: `$FEWSHOT_CACHE`, else
    `$XDG_CACHE_HOME/fewshot-bench`, else ~/.cache/fewshot-bench."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path("~/.cache").expanduser()) / "fewshot-bench"


def data_cache_dir(home: Path | str) -> Path:
    """The cache subfolder of the data folder `home`: its name plus a hash of its absolute
    path (two folders never collide), under `user_cache_dir()`. Decoded splits and the
    automatic class splits of `folder:PATH` go here."""
    home = Path(os.path.abspath(Path(home).expanduser()))
    tag = hashlib.sha256(str(home).encode()).hexdigest()[:10]
    return user_cache_dir() / f"{safe_name(home.name)[:40]}-{tag}"


def sized_name(name: str, size: int) -> str:
    """Cache name of a split decoded at `size` px: `cub-224px`."""
    return f"{name}-{size}px"


def cache_dirs(home: Path) -> list[Path]:
    """Where a split's cache is looked for, in order: the user cache (the only place one
    is written), then `<home>/.fewshot-cache`, where older versions wrote it."""
    return [data_cache_dir(home), Path(os.path.abspath(home)) / CACHE_DIRNAME]


def plan_key(plan: SplitPlan) -> str:
    """Hash of loader version, parameters and every input file's size and mtime."""
    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "name": plan.cache_name, "split": plan.split,
            "params": plan.params}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    home = Path(os.path.abspath(plan.cache_home))
    for path in plan.inputs:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise BenchError(f"{plan.dataset}: cannot read {path} ({exc.strerror}). Check the "
                             "file's permissions, or get the data set again.") from exc
        p = os.path.abspath(path)
        rel = os.path.relpath(p, home) if p.startswith(str(home) + os.sep) else p
        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _stem(plan: SplitPlan, key: str) -> str:
    return f"{safe_name(plan.cache_name)}-{plan.split}-{key}"


def _read(folder: Path, stem: str, key: str) -> tuple[dict, Path] | None:
    meta_path = folder / f"{stem}.json"
    try:
        info = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("version") != CACHE_VERSION or info.get("key") != key:
        return None
    return info, meta_path


def cached_info(plan: SplitPlan, key: str | None = None) -> dict | None:
    """The cache's JSON record of this split if a current cache exists (cheap: no arrays)."""
    key = key or plan_key(plan)
    for folder in cache_dirs(plan.cache_home):
        found = _read(folder, _stem(plan, key), key)
        if found:
            return found[0]
    return None


def _open(folder: Path, stem: str, key: str) -> tuple[dict, np.ndarray, np.ndarray, Path] | None:
    found = _read(folder, stem, key)
    if found is None:
        return None
    info, meta_path = found
    try:
        # copy-on-write mapping: pages load on use, writes stay private, no warnings
        images = np.load(folder / f"{stem}.images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(folder / f"{stem}.labels.npy", allow_pickle=False)
        names = [str(c) for c in info["class_names"]]
        n = int(info["n_images"])
        ok = (images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == n
              and images.shape[-1] == 3 and labels.shape == (n,) and labels.dtype.kind in "iu"
              and (n == 0 or (labels.min() >= 0 and labels.max() < len(names))))
    except Exception:  # truncated, missing or foreign files: rebuild
        return None
    return (info, images, labels, meta_path) if ok else None


class _Writer:
    """Writes one split's cache atomically into the data folder's user cache folder."""

    def __init__(self, plan: SplitPlan, key: str):
        self.plan, self.key, self.stem = plan, key, _stem(plan, key)
        self.folder = self._writable_folder()
        self.tmp: str | None = None
        self.mm: np.ndarray | None = None

    def _writable_folder(self) -> Path | None:
        folder = data_cache_dir(self.plan.cache_home)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            return folder
        except OSError:
            return None

    def alloc(self, n: int, h: int, w: int) -> np.ndarray:
        """A writable uint8 [n, h, w, 3] array: a memory map of the future cache file (so a
        large split never has to fit in memory twice), else plain memory."""
        shape = (int(n), int(h), int(w), 3)
        if self.folder is not None and self.mm is None:
            try:
                fd, self.tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{self.stem}.images.",
                                                suffix=".tmp")
                os.close(fd)
                self.mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8,
                                                    shape=shape)
                return self.mm
            except (OSError, ValueError):
                self.abort()
        return np.empty(shape, dtype=np.uint8)

    def abort(self) -> None:
        if self.tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
        self.tmp, self.mm = None, None

    def commit(self, built: Built) -> Path | None:
        """Write the three files; the JSON record last. Returns its path, or None when the
        cache folder is not writable (the split then lives in memory only)."""
        if self.folder is None:
            return None
        folder, stem = self.folder, self.stem
        images_path = folder / f"{stem}.images.npy"
        written: list[Path] = []
        try:
            if self.mm is not None and built.images is self.mm:
                self.mm.flush()
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(self.tmp, images_path)
                self.tmp = None
            else:
                self.abort()
                with atomic_open(images_path, "wb") as f:
                    np.save(f, np.ascontiguousarray(built.images), allow_pickle=False)
            written.append(images_path)
            labels_path = folder / f"{stem}.labels.npy"
            with atomic_open(labels_path, "wb") as f:
                np.save(f, np.asarray(built.labels, dtype=np.int64), allow_pickle=False)
            written.append(labels_path)
            counts = np.bincount(built.labels, minlength=len(built.class_names))
            record = {
                "version": CACHE_VERSION, "key": self.key, "dataset": self.plan.dataset,
                "split": self.plan.split, "layout": self.plan.layout,
                "source": str(self.plan.source), "n_images": int(len(built.labels)),
                "image_shape": list(built.images.shape[1:]),
                "class_names": list(built.class_names), "counts": counts.tolist(),
                "meta": built.meta,
            }
            meta_path = folder / f"{stem}.json"
            write_atomic(meta_path, json.dumps(record, indent=1) + "\n")
        except OSError:  # disk full, permissions changed: work on without a cache
            self.abort()
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            return None
        self._remove_stale(folder)
        return meta_path

    def _remove_stale(self, folder: Path) -> None:
        """Caches of the same split under another key describe files that changed."""
        prefix = f"{safe_name(self.plan.cache_name)}-{self.plan.split}-"
        for path in folder.glob(prefix + "*"):
            rest = path.name[len(prefix):]
            key = rest.split(".", 1)[0]
            if key != self.key and len(key) == len(self.key):
                with contextlib.suppress(OSError):
                    path.unlink()


def _check_built(plan: SplitPlan, built: Built) -> None:
    images, labels = built.images, np.asarray(built.labels)
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3
            or labels.shape != (len(images),)):
        raise RuntimeError(f"loader for {plan.dataset} built inconsistent arrays "
                           f"{images.dtype} {images.shape} / {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(built.class_names)):
        raise RuntimeError(f"loader for {plan.dataset} built labels outside its class list")


def load_split(plan: SplitPlan) -> ImageSplit:
    """The split of `plan`, from its cache when current, else decoded (and cached)."""
    key = plan_key(plan)
    stem = _stem(plan, key)
    hit = None
    for folder in cache_dirs(plan.cache_home):
        hit = _open(folder, stem, key)
        if hit:
            break
    if hit is None:
        writer = _Writer(plan, key)
        try:
            built = plan.build(writer.alloc)
            built.labels = np.asarray(built.labels, dtype=np.int64)
            _check_built(plan, built)
        except BaseException:
            writer.abort()
            raise
        meta_path = writer.commit(built)
        if meta_path is not None:
            hit = _open(meta_path.parent, stem, key)
        if hit is None:  # no writable cache folder: keep the decoded arrays in memory
            return _split(plan, built.images, built.labels, built.class_names, built.meta,
                          None, False)
        return _split(plan, hit[1], hit[2], hit[0]["class_names"], hit[0].get("meta") or {},
                      hit[3], False)
    info, images, labels, meta_path = hit
    return _split(plan, images, labels, info["class_names"], info.get("meta") or {},
                  meta_path, True)


def _split(plan: SplitPlan, images, labels, class_names, built_meta: dict,
           cache_path: Path | None, hit: bool) -> ImageSplit:
    meta = {"source": str(plan.source), "layout": plan.layout,
            "cache": str(cache_path) if cache_path else None, "cache_hit": hit,
            **built_meta, **plan.meta}
    kind, extra = ImageSplit, {}
    if plan.fingerprint_size is not None:
        kind, extra = SizedSplit, {"fingerprint_size": plan.fingerprint_size}
    return kind(dataset=plan.dataset, split=plan.split, images=images,
                labels=np.asarray(labels, dtype=np.int64),
                class_names=[str(c) for c in class_names], meta=meta, **extra)
