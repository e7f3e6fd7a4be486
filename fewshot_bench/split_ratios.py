"""`--split-ratios TRAIN:VAL:TEST`: how the automatic class split of a `folder:PATH` data set
shares its classes between train, val and test.

Three non-negative numbers with a positive sum, normalised (``3:1:1`` = ``0.6:0.2:0.2``,
the default; ``0:0:1`` puts every class in test, for a folder that is only evaluated on).
A configuration keeps the canonical text (fractions, 6 significant digits) and None for the
default, so runs with the default ratios look exactly as they did before the option.
Light on imports: `config.validate` parses it before torch is imported.
"""

from __future__ import annotations

import math

from .errors import BenchError

DEFAULT = "0.6:0.2:0.2"
NAMES = ("train", "val", "test")
_HOW = ("Pass three numbers TRAIN:VAL:TEST, each 0 or more, not all 0: the shares of the "
        f"classes in train, val and test, e.g. {DEFAULT} (the default) or 0:0:1 (every class "
        "in test).")


def _numbers(text: str) -> list[float]:
    parts = str(text).strip().split(":")
    if len(parts) != 3:
        raise BenchError(f"--split-ratios {text!r} needs three numbers separated by ':', got "
                         f"{len(parts)}. {_HOW}")
    values = []
    for name, part in zip(NAMES, parts):
        try:
            v = float(part)
        except ValueError:
            raise BenchError(f"--split-ratios {text!r}: the {name} share {part.strip()!r} is not "
                             f"a number. {_HOW}") from None
        if not math.isfinite(v) or v < 0:
            raise BenchError(f"--split-ratios {text!r}: the {name} share must be a finite "
                             f"number >= 0 (got {part.strip()}). {_HOW}")
        values.append(v)
    if sum(values) <= 0:
        raise BenchError(f"--split-ratios {text!r} is all zeros: no split would get a class. "
                         f"{_HOW}")
    return values


def canonical(text: str | None) -> str | None:
    """The canonical form of `text` (normalised fractions), None for the default (and for
    None). BenchError for anything but three non-negative numbers with a positive sum."""
    if text is None:
        return None
    values = _numbers(text)
    total = sum(values)
    out = ":".join(f"{v / total:.6g}" for v in values)
    return None if out == DEFAULT else out


def fractions(text: str | None) -> tuple[float, float, float]:
    """(train, val, test) shares of `text` (None: the default), summing to 1."""
    values = _numbers(canonical(text) or DEFAULT)
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def tag(text: str | None) -> str:
    """File-name form of the ratios, e.g. ``0.6-0.2-0.2``."""
    return (canonical(text) or DEFAULT).replace(":", "-")


def episodes_dataset(dataset: str, ratios: str | None) -> str:
    """The data set name that episode files of `dataset` split by `ratios` carry: the name
    itself for the default ratios, ``folder:PATH@0:0:1`` otherwise (another class split
    is another data set: its episodes must not share a file with the default's)."""
    ratios = canonical(ratios)
    return dataset if ratios is None else f"{dataset}@{ratios}"
