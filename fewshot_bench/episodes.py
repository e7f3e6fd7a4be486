"""N-way K-shot episodes: sampled once from a seed, stored, and replayed for every method.

Storing the episodes (not just the seed) is what makes method comparisons paired: every
method reads the very same file, so per-episode accuracies can be differenced. Formats
follow learn2learn's conventions (episode-local labels 0..N-1, class-major support and
query sets); its sampler is not used, because it is driven by Python's global `random`
and is about 10x slower than drawing index arrays with a seeded numpy Generator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import BenchError
from .fileio import atomic_open
from .shots import parse_shots_dist, support_mask

FORMAT_VERSION = 1

__all__ = [
    "FORMAT_VERSION",
    "EpisodeSpec",
    "EpisodeSet",
    "sample_episodes",
    "save_episodes",
    "load_episodes",
    "episode_path",
    "get_or_create_episodes",
    "leak_free_classes",
    "query_leaks",
]


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that determines a set of episodes; its `key` names the stored file."""

    dataset: str
    split: str
    ways: int
    shots: int
    queries: int
    episodes: int
    seed: int
    # imbalanced episodes (shots.py): per-class shots drawn from this; `shots` is its maximum
    shots_dist: str | None = None
    # group-aware: no query shares a group (e.g. an emoji's other drawing) with a support
    # image of its episode, and each class's support images come from distinct groups
    grouped: bool = False

    @property
    def key(self) -> str:
        """File name stem, e.g. ``emoji-test-5w1s15q-600e-seed0-grouped``
        (imbalanced: ``emoji-test-5wuniform1-5s15q-600e-seed0-grouped``; without groups
        the suffix is left out). A name with other characters (folder:PATH) has them
        replaced by "_" and a short hash of the exact name appended, so that two data sets
        whose names differ only there ("col a", "col_a") get different files."""
        shots = parse_shots_dist(self.shots_dist).slug if self.shots_dist else self.shots
        name = f"{self.dataset}-{self.split}-{self.ways}w{shots}s{self.queries}q-{self.episodes}e-seed{self.seed}"
        name += "-grouped" if self.grouped else ""
        # never let a data set name escape the directory
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        if safe != name:  # names that need no change keep them: stored files stay valid
            safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return safe

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        # balanced and ungrouped files (and their content hashes) stay as they were
        if d["shots_dist"] is None:
            del d["shots_dist"]
        if not d["grouped"]:
            del d["grouped"]
        return d

    def validate(self) -> None:
        """Check the numbers that do not depend on the data (BenchError if wrong)."""
        for name in ("ways", "shots", "queries", "episodes", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise BenchError(f"--{name} must be a whole number, got {value!r}.")
        if self.ways < 2:
            raise BenchError(f"--ways must be at least 2 (got {self.ways}): a 1-way task has nothing to classify.")
        if self.shots < 1:
            raise BenchError(f"--shots must be at least 1 (got {self.shots}): each class needs a labelled example.")
        if self.queries < 1:
            raise BenchError(f"--queries must be at least 1 (got {self.queries}): without queries nothing is scored.")
        if self.episodes < 1:
            raise BenchError(f"--episodes must be at least 1 (got {self.episodes}); 600 or more is customary.")
        if self.seed < 0:
            raise BenchError(f"--seed must be 0 or more (got {self.seed}).")
        if not isinstance(self.grouped, (bool, np.bool_)):
            raise BenchError(f"grouped must be True or False, got {self.grouped!r}.")
        if self.shots_dist is not None and parse_shots_dist(self.shots_dist).hi != self.shots:
            raise BenchError(f"shots {self.shots} must equal the largest count of --shots-dist "
                             f"{self.shots_dist} (the width of the stored support set).")


@dataclass
class EpisodeSet:
    """A fixed set of E episodes of one spec, as index arrays into one split.

    Episode-local label of class j is j, and support/query are class-major, so the labels
    are the same for every episode (`support_labels`, `query_labels`).
    """

    spec: EpisodeSpec
    data_fingerprint: str
    classes: np.ndarray  # int64 [E, N]: split-level label of episode class j
    support: np.ndarray  # int64 [E, N*K]: image indices, first K belong to class 0, ...
    query: np.ndarray  # int64 [E, N*Q]: image indices, class-major
    # imbalanced episodes only: int64 [E, N] real support images per class; the first
    # shots[e, c] of class c's K slots are real, the rest repeat its first image
    shots: np.ndarray | None = None

    def __post_init__(self) -> None:
        s = self.spec
        self.classes = np.ascontiguousarray(self.classes, dtype=np.int64)
        self.support = np.ascontiguousarray(self.support, dtype=np.int64)
        self.query = np.ascontiguousarray(self.query, dtype=np.int64)
        e = self.classes.shape[0] if self.classes.ndim == 2 else -1
        expected = {
            "classes": (e, s.ways),
            "support": (e, s.ways * s.shots),
            "query": (e, s.ways * s.queries),
        }
        if s.shots_dist is not None or self.shots is not None:
            if s.shots_dist is None or self.shots is None:
                raise ValueError(f"per-class shots and a shots_dist go together ({s.key})")
            self.shots = np.ascontiguousarray(self.shots, dtype=np.int64)
            expected["shots"] = (e, s.ways)
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} must have shape {shape} for {s.key}, got {getattr(self, name).shape}")
        if self.shots is not None and self.shots.size:
            dist = parse_shots_dist(s.shots_dist)
            if self.shots.min() < dist.lo or self.shots.max() > dist.hi:
                raise ValueError(f"per-class shots outside {dist} in {s.key}")

    @property
    def support_mask(self) -> np.ndarray:
        """bool [E, N*K]: which support slots hold a real image (all, when balanced)."""
        if self.shots is None:
            return np.ones(self.support.shape, dtype=bool)
        return support_mask(self.shots, self.spec.shots)

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    @property
    def support_labels(self) -> np.ndarray:
        """Episode-local labels of the support set, int64 [N*K] (identical for every episode)."""
        return np.repeat(np.arange(self.spec.ways, dtype=np.int64), self.spec.shots)

    @property
    def query_labels(self) -> np.ndarray:
        """Episode-local labels of the query set, int64 [N*Q] (identical for every episode)."""
        return np.repeat(np.arange(self.spec.ways, dtype=np.int64), self.spec.queries)

    @property
    def content_hash(self) -> str:
        """sha256 over spec, data fingerprint and arrays: detects edited or corrupted files."""
        h = hashlib.sha256()
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        h.update(b"\0" + self.data_fingerprint.encode() + b"\0")
        for a in (self.classes, self.support, self.query) + (
                () if self.shots is None else (self.shots,)):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
        return h.hexdigest()

    def subset(self, indices: Sequence[int] | np.ndarray) -> EpisodeSet:
        """The episodes at `indices` (e.g. ``range(50)`` for a quick run).

        Sampling is prefix-stable, so ``subset(range(n))`` equals sampling n episodes with
        the same seed, and its spec (episodes=n) is exact. Other subsets are for in-memory
        use: their spec key would name a different sampling, so do not save them.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return EpisodeSet(
            spec=dataclasses.replace(self.spec, episodes=int(idx.size)),
            data_fingerprint=self.data_fingerprint,
            classes=self.classes[idx],
            support=self.support[idx],
            query=self.query[idx],
            shots=None if self.shots is None else self.shots[idx],
        )

    def check_against_labels(self, labels: np.ndarray) -> None:
        """Raise BenchError unless every index is valid and its label matches its class.

        Cheap (one gather); guards against replaying episodes on a different split when
        the caller's fingerprint did not catch it.
        """
        labels = np.asarray(labels)
        n = len(labels)
        for name in ("support", "query"):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= n):
                raise BenchError(
                    f"Episodes {self.spec.key} index images outside this split ({n} images): they were "
                    "made for other data. Delete the episode file to resample."
                )
        k, q = self.spec.shots, self.spec.queries
        if not (
            np.array_equal(labels[self.support], np.repeat(self.classes, k, axis=1))
            and np.array_equal(labels[self.query], np.repeat(self.classes, q, axis=1))
        ):
            raise BenchError(
                f"Episodes {self.spec.key} do not match the labels of this split: they were made for "
                "other data. Delete the episode file to resample."
            )


def _check_data(labels: np.ndarray, spec: EpisodeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Validate the spec against the split; return (class labels, images per class)."""
    where = f"{spec.dataset}/{spec.split}"
    if labels.ndim != 1 or labels.size == 0:
        raise BenchError(f"The split {where} has no labelled images; check the data set files.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise BenchError(f"The labels of {where} are not integers ({labels.dtype}); check the data set loader.")
    class_ids, counts = np.unique(labels, return_counts=True)
    n_classes = len(class_ids)
    if spec.ways > n_classes:
        works = "2" if n_classes == 2 else f"2 to {n_classes}"
        raise BenchError(
            f"--ways {spec.ways} needs {spec.ways} classes, but {where} has only {n_classes}. "
            f"Use --ways {works}."
        )
    need = spec.shots + spec.queries
    short = counts < need
    if short.any():
        smallest = int(counts.min())
        listed = ", ".join(f"{int(c)} ({int(m)} images)" for c, m in zip(class_ids[short][:10], counts[short][:10]))
        more = f" and {int(short.sum()) - 10} more" if short.sum() > 10 else ""
        shots = (f"--shots-dist {spec.shots_dist} (up to {spec.shots} shots)" if spec.shots_dist
                 else f"--shots {spec.shots}")
        if smallest - spec.queries >= 1:
            most = smallest - spec.queries
            fix = (f"With --queries {spec.queries} the largest possible "
                   + (f"HI of --shots-dist is {most}." if spec.shots_dist else f"--shots is {most}."))
        elif smallest - spec.shots >= 1:
            fix = f"With {shots} use --queries {smallest - spec.shots} or fewer."
        elif smallest >= 2:
            fix = f"Lower both, e.g. --shots 1 --queries {smallest - 1}."
        else:
            fix = "A class with a single image cannot give both a support and a query image; fix the split."
        raise BenchError(
            f"{shots} + --queries {spec.queries} = {need} distinct images per class, but the smallest "
            f"of the {n_classes} classes of {where} has only {smallest}. Classes with fewer than {need} images: "
            f"{listed}{more}. {fix}"
        )
    return class_ids, counts


def sample_episodes(labels: np.ndarray, spec: EpisodeSpec, data_fingerprint: str,
                    groups: np.ndarray | None = None) -> EpisodeSet:
    """Draw `spec.episodes` episodes from `labels` with ``np.random.default_rng(spec.seed)``.

    Per episode: N classes without replacement (in random order), then K+Q distinct images
    per class, the first K of which are support and the rest query (so they are disjoint).
    With `spec.shots_dist`, K is its largest count, and after the images each class's
    count is drawn (same stream); slots past it repeat the class's first support image.
    Each draw takes the smallest of uniform random keys, one numpy call per episode, and
    episodes are drawn in order from one stream, so the first n episodes are the same for
    any ``spec.episodes >= n`` (600 and 2000 episodes with one seed share their first 600).

    With ``spec.grouped``, `groups` (int64 [N]) says which images are copies of one another,
    and the draw is group-aware (`_sample_grouped`): only classes that can give a leak-free
    episode (`leak_free_classes`) take part.
    """
    spec.validate()
    labels = np.asarray(labels)
    class_ids, counts = _check_data(labels, spec)
    if spec.grouped:
        if groups is None or np.shape(groups) != labels.shape:
            raise ValueError(f"grouped episodes {spec.key} need one group per image")
        chosen, support, query, shots = _sample_grouped(labels, np.asarray(groups), spec)
        return EpisodeSet(spec=spec, data_fingerprint=data_fingerprint, classes=chosen,
                          support=support, query=query,
                          shots=shots if spec.shots_dist else None)
    n_ways, k, q, e = spec.ways, spec.shots, spec.queries, spec.episodes
    m = k + q

    # Images grouped by class: class c's images are by_class[starts[c] : starts[c] + counts[c]].
    by_class = np.argsort(labels, kind="stable").astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    n_max = int(counts.max())
    cols = np.arange(n_max)

    dist = parse_shots_dist(spec.shots_dist) if spec.shots_dist else None
    rng = np.random.default_rng(spec.seed)
    chosen = np.empty((e, n_ways), dtype=np.int64)  # positions into class_ids
    picks = np.empty((e, n_ways, m), dtype=np.int64)  # positions within each class
    shots = np.full((e, n_ways), k, dtype=np.int64)
    for i in range(e):
        ckeys = rng.random(len(class_ids))
        cls = np.argpartition(ckeys, n_ways - 1)[:n_ways] if n_ways < len(class_ids) else np.arange(n_ways)
        cls = cls[np.argsort(ckeys[cls])]  # random order: class j gets episode label j
        keys = rng.random((n_ways, n_max))
        keys[cols[None, :] >= counts[cls][:, None]] = np.inf  # only real images of the class
        sel = np.argpartition(keys, m - 1, axis=1)[:, :m] if m < n_max else np.broadcast_to(cols, (n_ways, m))
        order = np.argsort(np.take_along_axis(keys, sel, axis=1), axis=1)
        chosen[i] = cls
        picks[i] = np.take_along_axis(sel, order, axis=1)
        if dist is not None:
            shots[i] = dist.sample(rng, n_ways)

    images = by_class[starts[chosen][:, :, None] + picks]  # [E, N, K+Q]
    support = images[:, :, :k].copy()
    if dist is not None:  # unused slots repeat the class's first image (masked out later)
        unused = np.arange(k)[None, None, :] >= shots[:, :, None]
        support = np.where(unused, support[:, :, :1], support)
    return EpisodeSet(
        spec=spec,
        data_fingerprint=data_fingerprint,
        classes=class_ids[chosen].astype(np.int64),
        support=support.reshape(e, n_ways * k),
        query=images[:, :, k:].reshape(e, n_ways * q),
        shots=shots if dist is not None else None,
    )


def leak_free_classes(labels: np.ndarray, groups: np.ndarray, shots: int,
                      queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which classes can always give `shots` support images from distinct groups and
    `queries` query images from the other groups.

    Returns (class ids, eligible bool mask, groups per class). The guarantee is for the
    worst draw: the support taking the `shots` largest groups of the class must leave at
    least `queries` images (emoji: 2 drawings per code point, so a class needs
    2 * shots + queries images; 5-shot 15-query episodes need 25)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    class_ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    eligible = np.zeros(len(class_ids), dtype=bool)
    n_groups = np.zeros(len(class_ids), dtype=np.int64)
    order = np.lexsort((groups, inverse))  # by class, then group
    c_sorted, g_sorted = inverse[order], groups[order]
    new = np.r_[True, (c_sorted[1:] != c_sorted[:-1]) | (g_sorted[1:] != g_sorted[:-1])]
    run_class = c_sorted[new]  # one entry per (class, group)
    run_size = np.diff(np.r_[np.flatnonzero(new), len(order)])
    for c in range(len(class_ids)):
        sizes = np.sort(run_size[run_class == c])[::-1]
        n_groups[c] = len(sizes)
        eligible[c] = len(sizes) >= shots and sizes.sum() - sizes[:shots].sum() >= queries
    return class_ids, eligible, n_groups


def query_leaks(episodes: EpisodeSet, groups: np.ndarray) -> np.ndarray:
    """bool [E, N*Q]: which queries share a group with a (real) support image of their
    episode, i.e. are a near-copy of one. All False for group-aware episodes."""
    groups = np.asarray(groups)
    same = groups[episodes.query][:, :, None] == groups[episodes.support][:, None, :]
    return (same & episodes.support_mask[:, None, :]).any(axis=2)


def _grouped_pool(labels: np.ndarray, groups: np.ndarray, spec: EpisodeSpec) -> np.ndarray:
    """The classes group-aware episodes of `spec` draw from; BenchError if too few."""
    class_ids, eligible, n_groups = leak_free_classes(labels, groups, spec.shots, spec.queries)
    if eligible.sum() < spec.ways:
        where = f"{spec.dataset}/{spec.split}"
        short = ", ".join(f"{int(c)} ({int(g)} groups)" for c, g in
                          zip(class_ids[~eligible][:10], n_groups[~eligible][:10]))
        raise BenchError(
            f"--ways {spec.ways} needs {spec.ways} classes that can give {spec.shots} support "
            f"images from distinct groups and {spec.queries} queries from other groups, but "
            f"only {int(eligible.sum())} of the {len(class_ids)} classes of {where} can "
            f"(short: {short}). Lower --ways, --shots or --queries, or pass --groups none to "
            "sample without groups (queries may then be near-copies of support images).")
    return class_ids[eligible]


def _sample_grouped(labels: np.ndarray, groups: np.ndarray, spec: EpisodeSpec):
    """The group-aware draw: per class, uniform random keys over its images; the support is
    the first image (in key order) of each of the first K groups, the queries the first Q
    images whose group is in no support set of the episode (any class: a near-copy filed
    under another class is excluded too). A draw that leaves a class short of queries
    (only through groups that span classes) is drawn again from the same stream."""
    pool = _grouped_pool(labels, groups, spec)
    n_ways, k, q, e = spec.ways, spec.shots, spec.queries, spec.episodes
    members = [np.flatnonzero(labels == c) for c in pool]
    dist = parse_shots_dist(spec.shots_dist) if spec.shots_dist else None
    rng = np.random.default_rng(spec.seed)
    chosen = np.empty((e, n_ways), dtype=np.int64)
    support = np.empty((e, n_ways, k), dtype=np.int64)
    query = np.empty((e, n_ways, q), dtype=np.int64)
    shots = np.full((e, n_ways), k, dtype=np.int64)
    for i in range(e):
        for _attempt in range(1000):
            ckeys = rng.random(len(pool))
            cls = np.argpartition(ckeys, n_ways - 1)[:n_ways] if n_ways < len(pool) else np.arange(n_ways)
            cls = cls[np.argsort(ckeys[cls])]
            orders = [members[c][np.argsort(rng.random(len(members[c])))] for c in cls]
            order_groups = [groups[order] for order in orders]
            for j, (order, og) in enumerate(zip(orders, order_groups)):
                _, first = np.unique(og, return_index=True)
                support[i, j] = order[np.sort(first)[:k]]
            taken = groups[support[i]].reshape(-1)
            ok = True
            for j, (order, og) in enumerate(zip(orders, order_groups)):
                free = order[~np.isin(og, taken)]
                if len(free) < q:
                    ok = False
                    break
                query[i, j] = free[:q]
            if ok:
                break
        else:
            raise BenchError(f"Could not draw episode {i} of {spec.key} without a query that "
                             "shares a group with a support image in 1000 tries: groups span "
                             "too many classes. Check the --groups file.")
        chosen[i] = pool[cls]
        if dist is not None:
            shots[i] = dist.sample(rng, n_ways)
    if dist is not None:  # unused slots repeat the class's first image (masked out later)
        unused = np.arange(k)[None, None, :] >= shots[:, :, None]
        support = np.where(unused, support[:, :, :1], support)
    return chosen, support.reshape(e, n_ways * k), query.reshape(e, n_ways * q), shots


def episode_path(spec: EpisodeSpec, directory: str | Path) -> Path:
    """Where the episodes of `spec` are stored in `directory`."""
    return Path(directory) / f"{spec.key}.npz"


# The episode files committed with the source (the numbers in docs/ were measured on them);
# absent from an installed wheel.
COMMITTED_EPISODES = Path(__file__).resolve().parent.parent / "episodes"


def default_episodes_dir(spec: EpisodeSpec) -> Path:
    """Where a run without --episodes-dir (episodes_dir=None, as `fewshot_bench.run` has)
    keeps its episodes: the source checkout's committed episodes/ when it holds `spec`'s
    file, so such runs are paired with the published ones; else `episodes/` in the user
    cache ($FEWSHOT_CACHE, else ~/.cache/fewshot-bench), where a new file is sampled, so
    that nothing is written into the current folder or the source tree."""
    if episode_path(spec, COMMITTED_EPISODES).is_file():
        return COMMITTED_EPISODES
    from .data.cache import user_cache_dir  # the data package is not needed otherwise

    return user_cache_dir() / "episodes"


def make_episodes_dir(directory: str | Path) -> Path:
    """Create the --episodes-dir folder (and its parents) if needed; BenchError, not an
    OSError, when it is a file, lies under one or cannot be created."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise BenchError(f"--episodes-dir {directory} is a file, not a folder. Pass a folder "
                         "for the episode files (it is created if missing).")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"Cannot create --episodes-dir {directory} ({exc.strerror or exc}). "
                         "Pass a folder you can write to (it is created if missing).") from None
    return directory


def save_episodes(es: EpisodeSet, directory: str | Path) -> Path:
    """Write `<directory>/<spec.key>.npz` atomically; return its path.

    Temp file in the same directory + fsync + os.replace: a crash or a concurrent run never
    leaves a half-written file under the final name.
    """
    directory = make_episodes_dir(directory)
    path = episode_path(es.spec, directory)
    meta = {
        "format_version": FORMAT_VERSION,
        "spec": es.spec.to_dict(),
        "data_fingerprint": es.data_fingerprint,
        "content_hash": es.content_hash,
    }
    extra = {} if es.shots is None else {"shots": es.shots}
    try:
        with atomic_open(path, "wb") as f:
            np.savez_compressed(
                f, classes=es.classes, support=es.support, query=es.query,
                meta=np.array(json.dumps(meta)), **extra,
            )
    except OSError as exc:  # read-only folder, full disk, ...
        raise BenchError(f"Cannot write the episode file {path} ({exc.strerror or exc}). Pass "
                         "a folder you can write to with --episodes-dir.") from None
    return path


def load_episodes(path: str | Path) -> EpisodeSet:
    """Read an episode file and verify its content hash (BenchError if it does not match)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"No episode file at {path}. Check the path, or run without it to sample new episodes.")
    broken = (
        f"The episode file {path} was modified or is corrupted ({{why}}). Delete it to resample "
        "the episodes from their seed."
    )
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # own handle: closed on any error
            meta = json.loads(str(z["meta"][()]))
            arrays = {name: z[name] for name in ("classes", "support", "query", "shots")
                      if name in z.files}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchError(broken.format(why=f"unreadable: {type(exc).__name__}")) from exc
    try:
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise BenchError(
                f"The episode file {path} has format version {version!r}, this fewshot-bench reads version "
                f"{FORMAT_VERSION}. Delete it to resample the episodes."
            )
        es = EpisodeSet(
            spec=EpisodeSpec(**meta["spec"]),
            data_fingerprint=str(meta["data_fingerprint"]),
            **arrays,
        )
        stored_hash = meta["content_hash"]
    except BenchError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(broken.format(why=f"bad contents: {exc}")) from exc
    if es.content_hash != stored_hash:
        raise BenchError(broken.format(why="content hash mismatch"))
    return es


def get_or_create_episodes(
    labels: np.ndarray, spec: EpisodeSpec, data_fingerprint: str, directory: str | Path,
    groups: np.ndarray | None = None,
) -> tuple[EpisodeSet, Path, bool]:
    """Load the stored episodes of `spec` from `directory`, or sample and store them.

    Returns (episodes, path, created). Reusing the file is what makes runs paired: every
    method, in any process, scores the same episodes.
    """
    spec.validate()
    path = episode_path(spec, directory)
    if path.exists():
        es = load_episodes(path)
        if es.spec != spec:
            held, wanted = es.spec.to_dict(), spec.to_dict()
            diff = "; ".join(f"{k}: {held.get(k)!r} in the file, {wanted.get(k)!r} now"
                             for k in {**held, **wanted} if held.get(k) != wanted.get(k))
            raise BenchError(
                f"The episode file {path} holds the episodes of other settings ({diff}), so "
                "it was renamed or copied from another file. Move it aside (or delete it) to "
                "sample the episodes of these settings."
            )
        if es.data_fingerprint != data_fingerprint:
            raise BenchError(
                f"The data set {spec.dataset}/{spec.split} changed since the episodes in {path} were made "
                f"(data fingerprint {es.data_fingerprint} then, {data_fingerprint} now). Restore the data, or "
                "delete the file to resample and rerun every method on the new episodes."
            )
        es.check_against_labels(labels)
        if spec.grouped and query_leaks(es, groups).any():
            raise BenchError(f"The episode file {path} says it is group-aware, but some of its "
                             "queries share a group with a support image: it was edited. Delete "
                             "it to resample.")
        return es, path, False
    es = sample_episodes(labels, spec, data_fingerprint, groups)
    return es, save_episodes(es, directory), True
