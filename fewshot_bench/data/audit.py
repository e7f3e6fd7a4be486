"""`bench data audit NAME`: exact and near-duplicate images within a class, across classes
and across splits, for any data set `create_dataset` loads.

Near duplicates are found with the perceptual hash of the maintained `imagehash` library
(`imagehash.phash`, called image by image: grayscale, 32 x 32 LANCZOS resize, 2-D DCT, the
top-left 8 x 8 coefficients against their median). It is fast enough as it is (0.06 to
0.1 ms per image on one core: 3.5 to 6 s for CIFAR-100's 60,000 images), so no
vectorised copy of the algorithm is kept: the hashes are imagehash's, bit for bit. Two images are a pair
when the Hamming distance of their 64-bit hashes is at most `max_distance`; they are an
exact pair when their pixels are identical (sha1 of the uint8 array and its shape).
Identical pixels give identical hashes, so every exact pair is also a distance-0 pair.

Pairs are searched with a multi-index (pigeonhole: split the 64 bits into max_distance + 1
blocks; two hashes within the distance agree exactly on at least one block, so only
images sharing a block value are compared), or by chunked all-pairs popcount when the
index would not prune enough (large distances, very uniform hashes). Both give the same
pairs; `find_pairs(..., method=...)` forces one.

The groups file (`write_groups`) makes the episode sampler treat each duplicate cluster
(connected components of the pairs within one split, within-class and across-classes
alike) as one image group: CSV columns `split,index,group,class,dataset,fingerprint`, one
row per image in a cluster of two or more, `index` the position in
`create_dataset(name, split, root).images`, `group` unique in the file (`dup-1`, ...),
`fingerprint` that split's `ImageSplit.fingerprint()`.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import BenchError
from ..fileio import atomic_open
from .base import ImageSplit
from .common import SPLITS, resolve_root, safe_name
from .groups import connected_components

KINDS = ("within-class", "across-classes", "across-splits")
# Checked on the emoji images (400 sampled, see docs/data.md): distance <= 4 finds 94% of
# 64->48->64 px resized copies and 90% of JPEG-75 copies, while no two of 2,000 random
# noise images come closer than 12. pHash bits are nearly always 32 ones and 32 zeros, so
# distances are even: 4 and 5 select the same pairs.
DEFAULT_MAX_DISTANCE = 4
# Above this, unrelated images match: two random 64-bit hashes are within 16 bits with
# probability ~4e-5, i.e. ~70,000 false pairs among CIFAR-100's 1.8e9 pairs (at 4: ~1e-4
# false pairs in all).
MAX_DISTANCE_LIMIT = 16
HASH_BITS = 64
PAIR_COLUMNS = ["kind", "distance", "exact", "split_a", "index_a", "class_a", "split_b",
                "index_b", "class_b", "hash_a", "hash_b"]
GROUP_COLUMNS = ["split", "index", "group", "class", "dataset", "fingerprint"]

_POP8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
_CELLS = 1 << 22  # elements per block of popcounts: bounds memory at ~32 MiB per temporary


# --------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------

def phash_images(images: np.ndarray, *, progress: bool = False, desc: str = "pHash") -> np.ndarray:
    """`imagehash.phash` of each uint8 [N, H, W, 3] image as uint64 [N].

    The bit order is imagehash's: `int(str(imagehash.phash(img)), 16)` equals the value."""
    import imagehash
    from PIL import Image
    from tqdm.auto import tqdm

    bits = np.empty((len(images), HASH_BITS), dtype=bool)
    bar = tqdm(total=len(images), desc=desc, unit="img", leave=False, disable=not progress,
               mininterval=0.5)
    try:
        for i in range(len(images)):
            bits[i] = imagehash.phash(Image.fromarray(np.asarray(images[i]))).hash.reshape(-1)
            if i % 512 == 511:  # tqdm per image would cost more than the hash
                bar.update(512)
        bar.update(len(images) - bar.n)
    finally:
        bar.close()
    return np.packbits(bits, axis=1).view(">u8").reshape(-1).astype(np.uint64)


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """sha1 of each image's shape and uint8 pixels, as bytes [N] (dtype S20)."""
    out = np.empty(len(images), dtype="S20")
    for i in range(len(images)):
        img = np.ascontiguousarray(images[i])
        out[i] = hashlib.sha1(str(img.shape).encode() + img.tobytes()).digest()
    return out


def hash_hex(hashes: np.ndarray) -> list[str]:
    """16-digit hex of each hash, as `str(imagehash.phash(...))` prints it."""
    return [f"{int(h):016x}" for h in hashes]


# --------------------------------------------------------------------------------------
# pair search
# --------------------------------------------------------------------------------------

def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count on numpy >= 2, a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POP8[x.view(np.uint8)].reshape(x.shape + (8,)).sum(-1, dtype=np.uint8)


def _brute_pairs(h: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j of `h` within the distance, by popcount of row chunks against the
    rest: n^2/2 comparisons, in blocks of at most _CELLS."""
    n = len(h)
    found_i, found_j = [], []
    for r0 in range(0, n - 1, max(1, _CELLS // max(n, 1))):
        r1 = min(n, r0 + max(1, _CELLS // max(n, 1)))
        d = popcount64(h[r0:r1, None] ^ h[None, r0:])
        ii, jj = np.nonzero(d <= max_distance)
        keep = jj > ii  # columns start at r0, so this is global j > global i
        found_i.append(ii[keep] + r0)
        found_j.append(jj[keep] + r0)
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


def _blocks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 near-equal bit blocks covering the 64 bits."""
    m = max_distance + 1
    widths = [HASH_BITS // m + (1 if k < HASH_BITS % m else 0) for k in range(m)]
    shifts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    return [(int(s), int(w)) for s, w in zip(shifts, widths)]


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """order (argsort of keys) and the start and length of each run of >= 2 equal keys."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.concatenate([[0], np.flatnonzero(sk[1:] != sk[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [len(keys)]]))
    keep = lengths >= 2
    return order, starts[keep], lengths[keep]


def _multi_index_cost(h: np.ndarray, max_distance: int) -> int:
    """Candidate comparisons the multi-index would make (pairs sharing a block value)."""
    total = 0
    for shift, width in _blocks(max_distance):
        _, _, lengths = _runs((h >> np.uint64(shift)) & np.uint64((1 << width) - 1))
        total += int((lengths * (lengths - 1) // 2).sum())
    return total


def _multi_index_pairs(h: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within the distance via exact matches on one of max_distance + 1 blocks."""
    n = len(h)
    keys_found = []
    for shift, width in _blocks(max_distance):
        order, starts, lengths = _runs((h >> np.uint64(shift)) & np.uint64((1 << width) - 1))
        for length in np.unique(lengths):
            s = starts[lengths == length]
            if length > 256:  # a big bucket: compare its members all against all
                for st in s:
                    members = np.sort(order[st:st + length])
                    a, b = _brute_pairs(h[members], max_distance)
                    keys_found.append(members[a] * n + members[b])
                continue
            p, q = np.triu_indices(int(length), 1)
            step = max(1, _CELLS // len(p))
            for c0 in range(0, len(s), step):
                sc = s[c0:c0 + step, None]
                a, b = order[sc + p].ravel(), order[sc + q].ravel()
                ok = popcount64(h[a] ^ h[b]) <= max_distance
                a, b = a[ok], b[ok]
                keys_found.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    if not keys_found:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = np.unique(np.concatenate(keys_found))  # a pair can share several blocks
    return keys // n, keys % n


def find_pairs(hashes: np.ndarray, max_distance: int, method: str = "auto"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, whose hashes differ in at most `max_distance` bits, and
    their distances; sorted by (i, j).

    method: "index" (multi-index), "brute" (all pairs), or "auto": the index unless it
    would compare more than 1/3 of all pairs. On 60,000 random hashes a candidate costs
    ~6 ns in the index and a comparison ~2.8 ns in the brute force (all pairs: 5 s); the
    index compares 0.07% of the pairs at distance 4 (0.04 s), 7% at 8 (0.7 s)."""
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(h)
    if method == "auto":
        all_pairs = n * (n - 1) // 2
        method = "index" if _multi_index_cost(h, max_distance) * 3 < all_pairs else "brute"
    if method == "index":
        i, j = _multi_index_pairs(h, max_distance)
    elif method == "brute":
        i, j = _brute_pairs(h, max_distance)
    else:
        raise ValueError(f"method must be auto, index or brute, not {method!r}")
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    return i, j, popcount64(h[i] ^ h[j]).astype(np.int64)


# --------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------

@dataclass
class AuditResult:
    """What `audit_splits` found. `pairs` has PAIR_COLUMNS (+ path_a, path_b when file
    paths are known); `groups` has GROUP_COLUMNS (+ path)."""

    dataset: str
    splits: list[str]
    max_distance: int
    images: dict[str, int]  # split -> number of images
    fingerprints: dict[str, str]  # split -> ImageSplit.fingerprint()
    pairs: pd.DataFrame
    groups: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)  # load, hash, search

    def counts(self) -> dict[str, int]:
        """Pairs per kind (every kind present, zeros included)."""
        found = self.pairs["kind"].value_counts()
        return {k: int(found.get(k, 0)) for k in KINDS}

    def exact_counts(self) -> dict[str, int]:
        found = self.pairs.loc[self.pairs["exact"], "kind"].value_counts()
        return {k: int(found.get(k, 0)) for k in KINDS}


def _groups(dataset: str, splits: list[str], sizes: dict[str, int], fingerprints: dict[str, str],
            class_of: dict[str, list[str]], paths: dict[str, list[str] | None],
            pairs: pd.DataFrame) -> pd.DataFrame:
    """Connected components (size >= 2) of the within-split pairs, one row per image."""
    rows, next_id = [], 1
    for split in splits:
        same = pairs[(pairs["split_a"] == split) & (pairs["split_b"] == split)]
        n = sizes[split]
        if same.empty or n == 0:
            continue
        comp = connected_components(n, same["index_a"].to_numpy(), same["index_b"].to_numpy())
        size = np.bincount(comp)
        members = np.flatnonzero(size[comp] >= 2)  # ascending index
        # number clusters in order of their first image, so the file is deterministic
        first_seen = {}
        for idx in members:
            first_seen.setdefault(comp[idx], len(first_seen))
        for idx in members:
            row = {"split": split, "index": int(idx),
                   "group": f"dup-{next_id + first_seen[comp[idx]]}",
                   "class": class_of[split][idx], "dataset": dataset,
                   "fingerprint": fingerprints[split]}
            if paths.get(split) is not None:
                row["path"] = paths[split][idx]
            rows.append(row)
        next_id += len(first_seen)
    columns = GROUP_COLUMNS + (["path"] if any(p is not None for p in paths.values()) else [])
    return pd.DataFrame(rows, columns=columns).astype({"index": "int64"})


def audit_splits(data: Sequence[ImageSplit], max_distance: int = DEFAULT_MAX_DISTANCE, *,
                 progress: bool = False, paths: dict[str, list[str]] | None = None,
                 method: str = "auto") -> AuditResult:
    """Audit already loaded splits (of one data set) against each other.

    `paths`: split -> file path of each image, when known (folder data)."""
    check_max_distance(max_distance)
    if len({d.split for d in data}) != len(data):
        raise ValueError("each split may be given once")
    paths = paths or {}
    t0 = time.perf_counter()
    hashes, digests = [], []
    for d in data:
        hashes.append(phash_images(d.images, progress=progress, desc=f"pHash {d.split}"))
        digests.append(pixel_digests(d.images))
    t_hash = time.perf_counter() - t0
    result = _assemble(data, hashes, digests, max_distance, paths, method)
    result.seconds.update({"hash": t_hash, "search": result.seconds["search"]})
    return result


def _assemble(data: Sequence[ImageSplit], hashes: list[np.ndarray], digests: list[np.ndarray],
              max_distance: int, paths: dict[str, list[str]], method: str) -> AuditResult:
    """Pairs and groups from the per-split hashes and pixel digests."""
    t0 = time.perf_counter()
    splits = [d.split for d in data]
    sizes = {d.split: len(d) for d in data}
    h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    dig = np.concatenate(digests) if digests else np.empty(0, "S20")
    split_id = np.concatenate([np.full(len(d), k) for k, d in enumerate(data)]) if data else np.empty(0, int)
    local = np.concatenate([np.arange(len(d)) for d in data]) if data else np.empty(0, int)
    labels = np.concatenate([d.labels for d in data]) if data else np.empty(0, int)
    i, j, dist = find_pairs(h, max_distance, method)
    t_search = time.perf_counter() - t0

    class_of = {d.split: [d.class_names[y] for y in d.labels] for d in data}
    same_split = split_id[i] == split_id[j]
    kind = np.where(~same_split, KINDS[2], np.where(labels[i] == labels[j], KINDS[0], KINDS[1]))
    sa, sb = [splits[k] for k in split_id[i]], [splits[k] for k in split_id[j]]
    ia, ib = local[i], local[j]
    pairs = pd.DataFrame({
        "kind": pd.Categorical(kind, categories=list(KINDS)),
        "distance": dist,
        "exact": dig[i] == dig[j],
        "split_a": sa, "index_a": ia,
        "class_a": [class_of[s][k] for s, k in zip(sa, ia)],
        "split_b": sb, "index_b": ib,
        "class_b": [class_of[s][k] for s, k in zip(sb, ib)],
        "hash_a": hash_hex(h[i]), "hash_b": hash_hex(h[j]),
    }, columns=PAIR_COLUMNS)
    if any(paths.get(s) is not None for s in splits):
        def path(s, k):
            return paths[s][k] if paths.get(s) is not None else ""
        pairs["path_a"] = [path(s, k) for s, k in zip(sa, ia)]
        pairs["path_b"] = [path(s, k) for s, k in zip(sb, ib)]
    order = {s: k for k, s in enumerate(splits)}
    pairs = (pairs.assign(_sa=[order[s] for s in sa], _sb=[order[s] for s in sb])
             .sort_values(["kind", "distance", "_sa", "index_a", "_sb", "index_b"], kind="stable")
             .drop(columns=["_sa", "_sb"]).reset_index(drop=True))
    pairs["kind"] = pairs["kind"].astype(str)
    fingerprints = {d.split: d.fingerprint() for d in data}
    dataset = data[0].dataset if data else ""
    groups = _groups(dataset, splits, sizes, fingerprints, class_of,
                     {s: paths.get(s) for s in splits}, pairs)
    return AuditResult(dataset=dataset, splits=splits, max_distance=max_distance, images=sizes,
                       fingerprints=fingerprints, pairs=pairs, groups=groups,
                       seconds={"search": t_search})


# --------------------------------------------------------------------------------------
# input checks (all before any work) and loading
# --------------------------------------------------------------------------------------

def check_max_distance(max_distance: int) -> None:
    if not isinstance(max_distance, (int, np.integer)) or isinstance(max_distance, bool) \
            or not 0 <= max_distance <= MAX_DISTANCE_LIMIT:
        raise BenchError(
            f"--max-distance must be a whole number of bits from 0 to {MAX_DISTANCE_LIMIT}, "
            f"not {max_distance}. It is the largest Hamming distance between two 64-bit "
            f"perceptual hashes that still counts as a near duplicate: 0 finds only images "
            f"that hash alike, the default {DEFAULT_MAX_DISTANCE} also finds resized and "
            f"re-encoded copies, and above {MAX_DISTANCE_LIMIT} unrelated images match.")


def parse_splits(splits: str | Sequence[str]) -> list[str]:
    """"train,val" or ["train", "val"] -> splits in train/val/test order, each once."""
    items = splits.split(",") if isinstance(splits, str) else list(splits)
    items = [s.strip() for s in items if s.strip()]
    unknown = [s for s in items if s not in SPLITS]
    if unknown or not items:
        raise BenchError(f"--splits takes a comma-separated list of train, val and test "
                         f"(default: all three), not '{','.join(items)}'"
                         + (f": unknown {', '.join(unknown)}." if unknown else "."))
    return [s for s in SPLITS if s in items]


def check_output(path: str | Path, option: str) -> Path:
    """The file `path` can be written (its folder exists or can be made, and is writable);
    a BenchError that names `option` otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise BenchError(f"{option} {path} is a folder. Give a file name, e.g. "
                         f"{option} {path / 'audit.csv'}.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BenchError(f"{option} {path}: {parent} is a file, not a folder, so the output "
                         f"cannot be written there. Pass a path in a folder you can write to.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BenchError(f"{option} {path}: the folder {parent} is not writable. Pass a path "
                         f"in a folder you can write to.")
    return path


def default_csv(name: str) -> Path:
    """results/audit-<name>.csv under the current folder (as `bench run` puts its runs)."""
    return Path("results") / f"audit-{safe_name(name.replace('folder:', 'folder-'))[:80]}.csv"


def _plan_all(name: str, splits: list[str], root: str | Path | None) -> dict[str, list[str] | None]:
    """Cheap checks of every split before any decoding (unknown name, missing files), and
    the image file paths where the loader has them (folder data)."""
    from . import FOLDER_PREFIX, dataset_info, list_datasets

    paths: dict[str, list[str] | None] = {}
    if name.startswith(FOLDER_PREFIX):
        from .folder import plan

        for split in splits:
            try:
                p = plan(name[len(FOLDER_PREFIX):], split)
            except OSError as exc:
                raise BenchError(f"{name}: cannot read {exc.filename} ({exc.strerror}). Check "
                                 "that the files are readable.") from exc
            paths[split] = [str(f) for f in p.inputs[1:]]  # inputs = [split file] + images
        return paths
    if name not in list_datasets():
        raise BenchError(f"Unknown data set '{name}'. Known data sets: "
                         f"{', '.join(list_datasets())}, or folder:PATH for a folder with one "
                         f"subfolder per class, e.g. `bench data audit emoji`.")
    info = dataset_info(name)
    for split in splits:
        if info is not None:
            try:
                info.plan(split, resolve_root(root))
            except OSError as exc:
                raise BenchError(f"{name}: cannot read {exc.filename} ({exc.strerror}). Check "
                                 "that the files are readable, or get the data set again.") from exc
        paths[split] = None
    return paths


def audit_dataset(name: str, root: str | Path | None = None, splits: str | Sequence[str] = SPLITS,
                  max_distance: int = DEFAULT_MAX_DISTANCE, *, progress: bool = False,
                  method: str = "auto") -> AuditResult:
    """Load each split of data set `name` (as `create_dataset(name, split, root)`) and find
    exact and near-duplicate pairs within and across them.

    Splits are loaded and hashed one at a time, so only one split's pixels are in memory."""
    from . import create_dataset

    check_max_distance(max_distance)
    wanted = parse_splits(splits)
    paths = _plan_all(name, wanted, root)
    t_load = t_hash = 0.0
    hashes, digests, shells = [], [], []
    for split in wanted:
        t0 = time.perf_counter()
        data = create_dataset(name, split, root)
        t1 = time.perf_counter()
        hashes.append(phash_images(data.images, progress=progress, desc=f"pHash {split}"))
        digests.append(pixel_digests(data.images))
        t_load, t_hash = t_load + t1 - t0, t_hash + time.perf_counter() - t1
        # keep labels, names and the fingerprint only: the pixels are done with
        shells.append(_Shell(data.dataset, split, list(data.class_names),
                             np.array(data.labels), len(data), data.fingerprint()))
        if paths.get(split) is not None and len(paths[split]) != len(data):
            paths[split] = None  # the file list no longer matches the images: don't guess
        del data
    result = _assemble(shells, hashes, digests, max_distance,
                       {s: p for s, p in paths.items() if p is not None}, method)
    result.dataset = name
    result.groups["dataset"] = name
    result.seconds.update({"load": t_load, "hash": t_hash})
    return result


@dataclass
class _Shell:
    """What the pair classification needs of an ImageSplit, without its pixels."""

    dataset: str
    split: str
    class_names: list[str]
    labels: np.ndarray
    n: int
    fp: str

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> str:
        return self.fp


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------

def _write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as f:
        frame.to_csv(f, index=False, lineterminator="\n")
    return path


def write_pairs(result: AuditResult, path: str | Path) -> Path:
    """All pairs as CSV (PAIR_COLUMNS, + path_a/path_b for folder data), written atomically."""
    return _write_csv(result.pairs, path)


def write_groups(result: AuditResult, path: str | Path) -> Path:
    """The sampler's groups file (module docstring), written atomically."""
    return _write_csv(result.groups, path)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _describe(row, side: str, base: Path | None) -> str:
    """"train #12 (cat)", or for folder data "train #12 cat/x.png" (relative to the folder)."""
    where = f"{row[f'split_{side}']} #{row[f'index_{side}']}"
    path = row.get(f"path_{side}")
    if isinstance(path, str) and path:
        try:
            path = os.path.relpath(path, base) if base is not None else path
        except ValueError:  # another drive (Windows)
            pass
        return f"{where} {path}"
    return f"{where} ({row[f'class_{side}']})"


def format_audit(result: AuditResult, examples: int = 3) -> str:
    """The summary `bench data audit` prints: counts per kind, clusters, a few examples."""
    sizes = ", ".join(f"{s} {result.images[s]:,}" for s in result.splits)
    lines = [f"{result.dataset}: {_plural(sum(result.images.values()), 'image')} ({sizes}); "
             f"pHash Hamming distance <= {result.max_distance}"]
    counts, exact = result.counts(), result.exact_counts()
    width = max(len(k) for k in KINDS)
    for kind in KINDS:
        lines.append(f"  {kind:<{width}}  {_plural(counts[kind], 'pair')}, {exact[kind]:,} exact")
    g = result.groups
    for split in result.splits:
        part = g[g["split"] == split]
        if len(part):
            lines.append(f"  {split}: {_plural(part['group'].nunique(), 'duplicate group')} of "
                         f"{_plural(len(part), 'image')}")
    base = None
    if result.dataset.startswith("folder:"):
        base = Path(result.dataset[len("folder:"):]).expanduser()
    if examples > 0:
        for kind in KINDS:
            part = result.pairs[result.pairs["kind"] == kind].head(examples)
            if part.empty:
                continue
            lines.append(f"examples, {kind}:")
            for _, row in part.iterrows():
                tag = "exact" if row["exact"] else f"distance {row['distance']}"
                lines.append(f"  {_describe(row, 'a', base)}  ~  {_describe(row, 'b', base)}  "
                             f"[{tag}]")
    s = result.seconds
    lines.append("time: " + ", ".join(f"{k} {s[k]:.1f} s" for k in ("load", "hash", "search")
                                      if k in s))
    return "\n".join(lines)
