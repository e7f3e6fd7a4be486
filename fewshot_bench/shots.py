"""Imbalanced episodes: how many support images each class gets (`--shots-dist`).

Two families, both drawn per episode from the episode sampler's own random stream:

- ``uniform:LO-HI``: each class independently gets a whole number of shots, uniform on
  LO..HI (``uniform:1-5``).
- ``zipf:A:LO-HI``: a long tail within the episode. The classes are ranked in random order
  and the class of rank r gets ``max(LO, round(HI * r**-A))`` shots, so with
  ``zipf:1:1-10`` a 5-way episode has 10, 5, 3, 3 and 2 support images (A = 0: all HI).

An imbalanced episode is stored like a balanced one of ``HI`` shots (class-major, HI slots
per class) plus the per-class counts: slots past a class's count repeat its first image and
are masked out of every loss, prototype and head (`support_mask`). Accuracy is also
reported per frequency band: the range LO..HI cut into (at most) three contiguous bands of
shot counts, few / medium / many.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import BenchError

__all__ = ["ShotsDist", "parse_shots_dist", "support_mask"]

_PATTERN = re.compile(r"^(uniform|zipf)(?::([0-9.eE+-]+))?:(\d+)-(\d+)$")
_EXAMPLES = "uniform:1-5 or zipf:1.0:1-10"


@dataclass(frozen=True)
class ShotsDist:
    kind: str  # "uniform" or "zipf"
    lo: int
    hi: int
    exponent: float = 0.0  # zipf only

    def __str__(self) -> str:
        if self.kind == "zipf":
            return f"zipf:{self.exponent:g}:{self.lo}-{self.hi}"
        return f"uniform:{self.lo}-{self.hi}"

    @property
    def slug(self) -> str:
        """For file names: ``uniform1-5``, ``zipf1_1-10``."""
        if self.kind == "zipf":
            return f"zipf{self.exponent:g}_{self.lo}-{self.hi}"
        return f"uniform{self.lo}-{self.hi}"

    def sample(self, rng: np.random.Generator, ways: int) -> np.ndarray:
        """Shots of each of `ways` classes (int64 [ways]), in episode-label order."""
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=ways).astype(np.int64)
        ranks = rng.permutation(ways) + 1  # class j has rank ranks[j]
        counts = np.floor(self.hi * ranks.astype(np.float64) ** -self.exponent + 0.5)
        return np.maximum(self.lo, counts).astype(np.int64)

    def bands(self) -> list[tuple[str, int, int]]:
        """(name, lowest shots, highest shots) of each frequency band, rarest first."""
        parts = [p for p in np.array_split(np.arange(self.lo, self.hi + 1), 3) if len(p)]
        names = {1: ["all"], 2: ["few", "many"], 3: ["few", "medium", "many"]}[len(parts)]
        return [(f"{n} ({p[0]}-{p[-1]} shots)" if p[0] != p[-1]
                 else f"{n} ({p[0]} shot{'' if p[0] == 1 else 's'})", int(p[0]), int(p[-1]))
                for n, p in zip(names, parts)]

    def band_of(self, shots: np.ndarray) -> np.ndarray:
        """Index into `bands()` of each shot count."""
        highs = np.array([hi for _, _, hi in self.bands()])
        return np.searchsorted(highs, np.asarray(shots), side="left")


def parse_shots_dist(value: str) -> ShotsDist:
    """``uniform:LO-HI`` or ``zipf:A:LO-HI`` -> ShotsDist; BenchError with the fix if bad."""
    m = _PATTERN.match(value.strip().lower())
    if not m:
        raise BenchError(f"--shots-dist '{value}' is not understood. Write it as {_EXAMPLES} "
                         "(LO-HI: the fewest and most support images of a class).")
    kind, exponent, lo, hi = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
    if kind == "uniform" and exponent is not None:
        raise BenchError(f"--shots-dist '{value}': uniform takes only a range, e.g. uniform:1-5.")
    if kind == "zipf" and exponent is None:
        raise BenchError(f"--shots-dist '{value}': zipf needs an exponent, e.g. zipf:1.0:1-10.")
    if not 1 <= lo <= hi:
        raise BenchError(f"--shots-dist '{value}': the range must satisfy 1 <= LO <= HI "
                         f"(got {lo}-{hi}).")
    if lo == hi:
        raise BenchError(f"--shots-dist '{value}' gives every class {lo} shots: that is a "
                         f"balanced episode, use --shots {lo} instead.")
    a = 0.0
    if exponent is not None:
        try:
            a = float(exponent)
        except ValueError:
            a = float("nan")
        if not (np.isfinite(a) and a >= 0):
            raise BenchError(f"--shots-dist '{value}': the zipf exponent must be a number >= 0.")
    return ShotsDist(kind, lo, hi, a)


def support_mask(shots: np.ndarray, width: int) -> np.ndarray:
    """bool [E, N*width]: which class-major support slots hold a real image."""
    shots = np.asarray(shots)
    return (np.arange(width)[None, None, :] < shots[..., None]).reshape(len(shots), -1)
