"""Which images of a split are copies of one another (`--groups`).

A group is a set of images that show the same thing: the Noto and Twemoji drawings of one
emoji, or near-duplicates found by `bench data audit`. The episode sampler never lets a
query share a group with a support image of its episode, because a near-copy of a support
image is an easy query (on emoji it added 1 to 2.4 points to ProtoNet's accuracy).

- `auto` (default): the data set's own groups (`ImageSplit.groups`; emoji: the code point),
  none for data sets without them.
- `none`: every image its own group: the sampler of fewshot-bench 0.1, which leaks on emoji.
- `FILE`: a CSV with the columns ``split,index,group`` (``bench data audit --groups-out``
  writes one; optional columns ``dataset`` and ``fingerprint`` are checked), merged with the
  data set's own groups: images linked through either are one group. ``index`` is the
  image's position in the split as loaded; for `folder:PATH` data a ``file`` column (the
  image's path relative to PATH, e.g. ``cat/img_01.jpg``) may stand instead, which is
  easier to write by hand. Images not listed are their own group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BenchError
from .base import ImageSplit

__all__ = ["GROUPS_AUTO", "GROUPS_NONE", "Grouping", "resolve_groups", "read_groups_file",
           "merge_groups", "connected_components"]

GROUPS_AUTO = "auto"
GROUPS_NONE = "none"
_COLUMNS = ("split", "index", "group")


@dataclass
class Grouping:
    """The groups a run samples with: `groups` is int64 [N] or None (no grouping)."""

    groups: np.ndarray | None
    source: str  # what the groups are, for run.json and the run's first lines
    file_sha256: str | None = None

    @property
    def count(self) -> int:
        return 0 if self.groups is None else int(len(np.unique(self.groups)))

    def record(self) -> dict:
        return {"source": self.source, "groups": self.count,
                **({"file_sha256": self.file_sha256} if self.file_sha256 else {})}


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id (int64 [n]) of each of n nodes linked by the edges (a[i], b[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return components(graph, directed=False)[1].astype(np.int64)


def _components(n: int, images: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Groups of n images linked to group nodes by the edges (images[i], nodes[i]): the
    components of images and nodes together, read off for the images."""
    size = n + int(nodes.max(initial=-1)) + 1
    return connected_components(size, images, n + nodes)[:n]


def merge_groups(*partitions: np.ndarray) -> np.ndarray:
    """One partition in which two images share a group when any of `partitions` links them."""
    n = len(partitions[0])
    images, nodes, offset = [], [], 0
    for p in partitions:
        _, inverse = np.unique(p, return_inverse=True)
        images.append(np.arange(n))
        nodes.append(offset + inverse.reshape(-1))
        offset += int(inverse.max(initial=-1)) + 1
    return _components(n, np.concatenate(images), np.concatenate(nodes))


def read_groups_file(path: str | Path, data: ImageSplit) -> np.ndarray:
    """The groups `path` gives the images of `data` (int64 [N]; unlisted images alone)."""
    import pandas as pd

    path = Path(path).expanduser()
    fix = ("Pass a CSV with the columns split,index,group, as `bench data audit NAME "
           "--groups-out FILE` writes, or --groups auto / none.")
    if not path.is_file():
        raise BenchError(f"--groups {path}: no such file. {fix}")
    try:
        table = pd.read_csv(path, dtype={"split": str, "group": str})
    except Exception as exc:  # pandas raises ParserError, UnicodeDecodeError, EmptyDataError...
        raise BenchError(f"--groups {path}: cannot read it as CSV ({type(exc).__name__}). {fix}") from None
    files = data.meta.get("files")
    if "index" not in table.columns and "file" in table.columns and files is not None:
        position = {f: i for i, f in enumerate(files)}
        table["index"] = [position.get(str(f), -1) if not str(f).startswith("..") else -1
                          for f in table["file"]]
        unknown = table.loc[(table["index"] < 0) & (table["split"] == data.split), "file"]
        if len(unknown):
            raise BenchError(f"--groups {path}: {len(unknown)} file(s) of the {data.split} rows "
                             f"are not images of {data.dataset}/{data.split}, e.g. "
                             f"{unknown.iloc[0]!r}. Name each image by its path relative to the "
                             "data folder (class/name.jpg), or use an index column.")
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise BenchError(f"--groups {path} lacks the column(s) {', '.join(missing)}. {fix}")
    if "dataset" in table.columns:
        named = sorted(set(table["dataset"].astype(str)))
        if named != [data.dataset]:
            raise BenchError(f"--groups {path} is for the data set {', '.join(named)}, not "
                             f"{data.dataset}. Make one for {data.dataset} with `bench data audit "
                             f"{data.dataset} --groups-out FILE`.")
    rows = table[table["split"] == data.split]
    if "fingerprint" in rows.columns and len(rows):
        prints = sorted(set(rows["fingerprint"].astype(str)))
        if prints != [data.fingerprint()]:
            raise BenchError(
                f"--groups {path} was made for other data ({data.dataset}/{data.split} had the "
                f"fingerprint {', '.join(prints)} then, {data.fingerprint()} now): its image "
                f"indices would point at other images. Run `bench data audit {data.dataset} "
                "--groups-out FILE` again on the data as they are now.")
    index = pd.to_numeric(rows["index"], errors="coerce")
    bad = ~np.isfinite(index.to_numpy(dtype=float)) | (index % 1 != 0) | (index < 0) | (index >= len(data))
    if bad.any():
        first = rows["index"][bad].iloc[0]
        raise BenchError(f"--groups {path}: index {first!r} (line {int(bad.to_numpy().argmax()) + 2} "
                         f"of the {data.split} rows) is not an image of {data.dataset}/{data.split}, "
                         f"which has images 0 to {len(data) - 1}. {fix}")
    if rows["group"].isna().any():
        raise BenchError(f"--groups {path}: some {data.split} rows have no group. {fix}")
    # each row links an image to its group's node (an image listed twice joins two groups)
    _, group_ids = np.unique(rows["group"].to_numpy(dtype=str), return_inverse=True)
    return _components(len(data), index.to_numpy(dtype=np.int64), group_ids.reshape(-1))


def resolve_groups(data: ImageSplit, option: str | None) -> Grouping:
    """The grouping a run samples with, from ``--groups`` (auto, none or a file)."""
    option = GROUPS_AUTO if option is None else str(option)
    own = data.groups
    own_source = data.meta.get("groups", "the data set's own groups") if own is not None else None
    if option == GROUPS_NONE:
        return Grouping(None, "none (every image its own group)")
    if option == GROUPS_AUTO:
        if own is None:
            return Grouping(None, f"none ({data.dataset} has no groups of its own; pass --groups "
                                  "FILE from `bench data audit` to add some)")
        return Grouping(own, str(own_source))
    from_file = read_groups_file(option, data)
    digest = hashlib.sha256(Path(option).expanduser().read_bytes()).hexdigest()
    merged = from_file if own is None else merge_groups(own, from_file)
    source = f"{option}" + (f" merged with {own_source}" if own is not None else "")
    return Grouping(merged, source, digest)
