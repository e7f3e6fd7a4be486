"""`bench data list` and `bench data download`: where each data set is looked for, whether
its files are there, class and image counts per split (without decoding), and fetching it
through torchvision/learn2learn where a network exists."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BenchError
from . import FOLDER_PREFIX, create_dataset, dataset_info, list_datasets
from .cache import cached_info
from .common import DATA_ENV, SPLITS, resolve_root


@dataclass
class SplitStatus:
    classes: int | None = None
    images: int | None = None
    problem: str = ""  # why the split cannot be loaded


@dataclass
class DatasetStatus:
    name: str
    title: str
    locations: list[Path]
    found: bool  # some of its files are where it looks
    layout: str = ""
    source: str = ""
    splits: dict[str, SplitStatus] = field(default_factory=dict)
    manual: str = ""

    @property
    def ready(self) -> bool:
        return all(not s.problem for s in self.splits.values())


def inspect_dataset(name: str, root: str | Path | None = None) -> DatasetStatus:
    """What `bench data list` shows for one data set; decodes nothing (counts that need
    decoding come from the cache when there is one)."""
    if name == "emoji":
        status = DatasetStatus(name, "Emoji subcategories (packaged offline default), 64 px",
                               [], True, layout="packaged with fewshot-bench")
        for split in SPLITS:
            data = create_dataset("emoji", split)
            status.source = data.meta.get("source", "")
            status.splits[split] = SplitStatus(data.num_classes, len(data))
        return status
    info = dataset_info(name)
    if info is None:
        raise BenchError(f"Unknown data set '{name}'. Known data sets: {', '.join(list_datasets())}.")
    root = resolve_root(root)
    locations = info.locations(root)
    status = DatasetStatus(name, info.title, locations, any(p.exists() for p in locations),
                           manual=info.manual(root))
    for split in SPLITS:
        try:
            plan = info.plan(split, root)
            counts = SplitStatus(plan.n_classes, plan.n_images)
            if counts.classes is None or counts.images is None:
                record = cached_info(plan)
                if record is not None:
                    counts = SplitStatus(len(record["class_names"]), int(record["n_images"]))
            status.layout, status.source = plan.layout, str(plan.source)
        except BenchError as exc:
            counts = SplitStatus(problem=str(exc))
        except OSError as exc:
            counts = SplitStatus(problem=f"{name}: cannot read {exc.filename} ({exc.strerror}).")
        status.splits[split] = counts
    return status


def _count(value: int | None, unit: str) -> str:
    return f"{value:,} {unit}" if value is not None else f"{unit}: not decoded yet"


def root_origin(root: str | Path | None) -> str:
    if root is not None:
        return "--data-root"
    return f"${DATA_ENV}" if os.environ.get(DATA_ENV, "").strip() else f"default (${DATA_ENV} unset)"


def format_catalog(root: str | Path | None = None) -> str:
    lines = [f"data root: {resolve_root(root)}  [{root_origin(root)}]", ""]
    for name in list_datasets():
        s = inspect_dataset(name, root)
        lines.append(f"{name}: {s.title}")
        if s.locations:
            lines.append(f"  looks in   {' | '.join(str(p) for p in s.locations)}")
        if s.ready:
            lines.append(f"  files      present: {s.layout}" + (f" at {s.source}" if s.source else ""))
        elif not s.found:
            lines.append("  files      missing")
            lines.append(f"  get it     bench data download {name}, or {s.manual}")
        else:
            problems = {sp.problem for sp in s.splits.values() if sp.problem}
            lines.append("  files      incomplete or unreadable")
            lines += [f"  problem    {p}" for p in sorted(problems)]
        for split, sp in s.splits.items():
            if not sp.problem:
                lines.append(f"  {split:<10} {_count(sp.classes, 'classes')}, "
                             f"{_count(sp.images, 'images')}")
        lines.append("")
    lines.append(f"{FOLDER_PREFIX}PATH: any folder with one subfolder of images per class; "
                 "optional PATH/split.json, else a seeded class split (--split-ratios, default "
                 "0.6:0.2:0.2) kept in the user cache; nothing is written into PATH")
    return "\n".join(lines)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def download_dataset(name: str, root: str | Path | None = None) -> str:
    """Fetch `name` into the data root (through a temporary folder, so a failed or
    interrupted download leaves nothing behind). Returns a one-line report."""
    if name == "emoji":
        return "emoji ships with fewshot-bench: nothing to download."
    if name.startswith(FOLDER_PREFIX):
        raise BenchError(f"{name} is a local folder: there is nothing to download.")
    info = dataset_info(name)
    if info is None:
        raise BenchError(f"Unknown data set '{name}'. Data sets that can be downloaded: "
                         f"{', '.join(n for n in list_datasets() if dataset_info(n))}.")
    if info.download is None:
        raise BenchError(f"{name} cannot be downloaded automatically: {info.manual(resolve_root(root))}.")
    root = resolve_root(root)
    targets = {src: root / dst for src, dst in info.download_moves.items()}
    if targets and all(t.exists() for t in targets.values()):
        return f"{name}: already present in {root} ({', '.join(str(t) for t in targets.values())})."
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".download-{name}-"))
    except OSError as exc:
        raise BenchError(f"{name}: cannot write to the data root {root} ({exc.strerror}). "
                         "Pass a writable folder with --data-root.") from exc
    try:
        try:
            with contextlib.redirect_stdout(None):  # the downloaders print progress chatter
                info.download(tmp)
        except ImportError as exc:
            raise BenchError(f"{name}: downloading needs {exc.name or 'a missing package'} "
                             "(pip install 'fewshot-bench[data]'), or "
                             f"{info.manual(root)}.") from exc
        except Exception as exc:  # no network: URLError, requests' ConnectionError, ...
            raise BenchError(f"{name}: download failed ({_why(exc)}); is there a network? "
                             f"Without one, {info.manual(root)}.") from exc
        moved = []
        for src, target in targets.items():
            if target.exists():
                continue
            if not (tmp / src).exists():
                raise BenchError(f"{name}: the download finished but produced no {src}. "
                                 f"Get the files by hand: {info.manual(root)}.")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / src, target)
            moved.append(str(target))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # leave no empty data root behind either
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return f"{name}: downloaded to {', '.join(moved) or root}."
