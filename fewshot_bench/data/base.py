"""The one shape every data set takes once loaded: a split of decoded RGB images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSplit:
    """One split (train/val/test) of a few-shot data set, fully decoded in memory.

    Few-shot benchmarks are small (tens of thousands of images at most at 84 px), so
    holding the split as one uint8 array keeps episode assembly a pure indexing operation.
    """

    dataset: str
    split: str
    images: np.ndarray  # uint8 [N, H, W, 3], RGB
    labels: np.ndarray  # int64 [N], indices into class_names
    class_names: list[str]
    meta: dict = field(default_factory=dict)
    # Optional int64 [N]: images with the same value are copies of one thing (the two
    # vendors' drawings of one emoji, near-duplicates found by `bench data audit`). The
    # group-aware sampler never puts two members of a group on both sides of an episode.
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError("labels must have one entry per image")
        self.labels = self.labels.astype(np.int64, copy=False)
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
            if self.groups.shape != self.labels.shape or not np.issubdtype(self.groups.dtype, np.integer):
                raise ValueError("groups must be integers, one entry per image")
            self.groups = self.groups.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.labels)

    def get_labels(self) -> np.ndarray:
        return self.labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """Short hash of labels and class names: episode files record it so they are never
        replayed against a different version of the data."""
        h = hashlib.sha256()
        h.update("\n".join(self.class_names).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update(str(self.images.shape).encode())
        return h.hexdigest()[:16]


def grouped_fingerprint(base: str, groups: np.ndarray) -> str:
    """The data fingerprint of group-aware episodes: `base` plus the partition `groups`
    makes (not its arbitrary ids), so changed groups invalidate the episodes made on them."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    # relabel by first occurrence: the same partition always hashes the same
    ids = np.argsort(np.argsort(first))[inverse.reshape(-1)].astype("<i8")
    h = hashlib.sha256()
    h.update(base.encode() + b"\0groups\0")
    h.update(ids.tobytes())
    return h.hexdigest()[:16]
