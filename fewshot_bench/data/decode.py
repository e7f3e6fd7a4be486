"""Decoding many image files (or encoded bytes) into one preallocated uint8 array."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .cache import Allocator
from .common import decode_image

_BAR_FROM = 2000  # show a progress bar (on a terminal only) from this many images


def decode_all(sources: Sequence[Path | bytes], size: int, alloc: Allocator, *, dataset: str,
               how: str, where: Callable[[int], str | Path] | None = None) -> np.ndarray:
    """Decode every source to uint8 [size, size, 3] RGB into one array from `alloc`.

    `where(i)` names source i in error messages (default: the path itself)."""
    out = alloc(len(sources), size, size)
    bar = tqdm(total=len(sources), desc=f"decoding {dataset}", unit="img", leave=False,
               disable=None if len(sources) >= _BAR_FROM else True)
    try:
        for i, src in enumerate(sources):
            label = where(i) if where else src
            out[i] = decode_image(src, size, dataset=dataset, where=label, how=how)
            bar.update(1)
    finally:
        bar.close()
    return out
