"""Data set registry: one entry point, `create_dataset(name, split, root=None)`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import BenchError
from .base import ImageSplit

# name -> loader(split, root) -> ImageSplit
_DATASETS: dict[str, Callable[[str, Path | None], ImageSplit]] = {}


def register_dataset(name: str):
    def wrap(fn: Callable[[str, Path | None], ImageSplit]):
        _DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def create_dataset(name: str, split: str, root: str | Path | None = None) -> ImageSplit:
    if name not in _DATASETS:
        raise BenchError(
            f"Unknown data set '{name}'. Known data sets: {', '.join(list_datasets())}. "
            "Pass one of them with --dataset."
        )
    if split not in ("train", "val", "test"):
        raise BenchError(f"Unknown split '{split}'. Use --split train, val or test.")
    return _DATASETS[name](split, Path(root) if root is not None else None)


from . import emoji  # noqa: E402,F401  (registers "emoji")

__all__ = ["ImageSplit", "create_dataset", "list_datasets", "register_dataset"]
