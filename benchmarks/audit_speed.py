"""Time `audit_splits` on CIFAR-100-sized data built in memory (no CIFAR download here).

60,000 random 32 x 32 uint8 RGB images in three splits (48,000 / 6,000 / 6,000, 100 /
16 / 20 classes, as CIFAR-FS's class split), plus planted copies:
exact, resized (32 -> 24 -> 32 px) and JPEG-90 re-encoded, within a class, across classes
and across splits. Prints the hashing and pair-search times (`--compare`: of both search
methods) and which planted pairs were found; it fails only when an exact copy is missed
(a resized or re-encoded copy of a 32 px image can move more than 4 bits: about 1 in 10
of these blocky test images through JPEG-90 does).

    python benchmarks/audit_speed.py [--n 60000] [--method auto|index|brute]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from fewshot_bench.data.audit import audit_splits, find_pairs, phash_images
from fewshot_bench.data.base import ImageSplit


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random blocky image: a 4 x 4 colour grid upscaled, so copies of it stay close
    (pure noise has no low frequencies worth keeping through a resize)."""
    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))


def _resized(img: np.ndarray) -> np.ndarray:
    s = img.shape[0]
    small = Image.fromarray(img).resize((s * 3 // 4,) * 2, Image.BICUBIC)
    return np.asarray(small.resize((s, s), Image.BICUBIC))


def _jpeg(img: np.ndarray, quality: int = 90) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def build(n: int, seed: int = 0) -> tuple[list[ImageSplit], list[tuple]]:
    """Three splits of n random images with planted pairs; the planted pairs as
    (split_a, index_a, split_b, index_b, exact)."""
    rng = np.random.default_rng(seed)
    sizes = {"train": n * 8 // 10, "val": n // 10, "test": n - n * 8 // 10 - n // 10}
    classes = {"train": 64, "val": 16, "test": 20}
    images = {s: rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8) for s, k in sizes.items()}
    labels = {s: np.arange(k) % classes[s] for s, k in sizes.items()}
    planted = []
    # each plant: a smooth original at (split, i) and a copy at (split2, j)
    plans = [("train", 0, "train", classes["train"], None),       # within-class, exact
             ("train", 1, "train", 1 + classes["train"], _resized),  # within-class, resized
             ("train", 2, "train", 2 + classes["train"], _jpeg),     # within-class, JPEG
             ("train", 3, "train", 4, _jpeg),                       # across classes
             ("train", 5, "test", 0, _resized),                     # across splits
             ("val", 0, "test", 1, None)]                           # across splits, exact
    for sa, ia, sb, ib, copy in plans:
        img = _smooth(rng, 32)
        images[sa][ia] = img
        images[sb][ib] = img if copy is None else copy(img)
        planted.append((sa, ia, sb, ib, copy is None))
    data = [ImageSplit("random-cifar", s, images[s], labels[s],
                       [f"{s}-{c}" for c in range(classes[s])]) for s in sizes]
    return data, planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--method", default="auto", choices=["auto", "index", "brute"])
    ap.add_argument("--compare", action="store_true", help="Also time both search methods.")
    args = ap.parse_args()
    data, planted = build(args.n)
    t0 = time.perf_counter()
    result = audit_splits(data, method=args.method)
    total = time.perf_counter() - t0
    found = {(r.split_a, r.index_a, r.split_b, r.index_b) for r in result.pairs.itertuples()}
    missing = [p[:4] for p in planted if p[:4] not in found]
    missing_exact = [p[:4] for p in planted if p[4] and p[:4] not in found]
    print(f"{args.n:,} images: hash {result.seconds['hash']:.1f} s, search "
          f"{result.seconds['search']:.2f} s ({args.method}), total {total:.1f} s; "
          f"pairs {result.counts()}; planted found {len(planted) - len(missing)}/{len(planted)}"
          + (f" (missed {missing})" if missing else ""))
    if args.compare:
        h = np.concatenate([phash_images(d.images) for d in data])
        for method in ("index", "brute"):
            t0 = time.perf_counter()
            i, _, _ = find_pairs(h, 4, method)
            print(f"find_pairs {method}: {time.perf_counter() - t0:.2f} s, {len(i)} pairs")
    if missing_exact:
        raise SystemExit(f"exact copies not found: {missing_exact}")


if __name__ == "__main__":
    main()
