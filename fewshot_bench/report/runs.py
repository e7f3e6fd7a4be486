"""Loading: one `bench run` folder (`Run`, `load_run`) and the run folders among the paths
`bench report` is given (`find_run_dirs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import BenchError
from ..results import BEFORE_ADDED, RECORD, ROWS, read_record, read_rows
from .fields import FORM_FIELD, LOSS_FIELDS, TRAIN_FIELDS, WEIGHTS_FIELD


@dataclass
class Run:
    """One `bench run` folder."""

    path: Path
    name: str
    record: dict
    config: dict
    rows: pd.DataFrame  # episodes.jsonl
    content_hash: str
    episodes_key: str
    finished: bool
    embeddings: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def setting(self) -> dict:
        c, rec = self.config, self.record
        return {
            "dataset": c.get("dataset"), "split": c.get("split"), "backbone": c.get("backbone"),
            "image_size": (rec.get("data") or {}).get("image_size") or c.get("image_size"),
            "tune": c.get("tune"), "ways": c.get("ways"),
            "shots": c.get("shots_dist") or c.get("shots"),  # imbalanced: e.g. uniform:1-5
            "queries": c.get("queries"), "n_episodes": c.get("episodes"),
        }

    @property
    def weights_name(self) -> str:
        """How labels name the network's weights: "pretrained" (the backbone's own), else
        the folder of a `weights.pth` (what `bench finetune` writes), else the file's stem.
        (Two different files of one name are told apart by merge_runs, as any repeat is.)"""
        path = self.config.get("weights")
        if not path:
            return "pretrained"
        p = Path(str(path))
        return p.parent.name if p.name == "weights.pth" and p.parent.name else p.stem

    def values(self) -> dict:
        """Hyperparameter values of this run (method_fields of every method)."""
        v = {f: self.config.get(f) for f in LOSS_FIELDS + TRAIN_FIELDS}
        for f in (FORM_FIELD, "logreg_c", "logreg_solver"):  # absent from older records
            v[f] = self.config.get(f, BEFORE_ADDED[f])
        v[WEIGHTS_FIELD] = self.weights_name
        dev = ((self.record.get("hardware") or {}).get("device")) or self.config.get("device")
        v["device"] = str(dev).split(":")[0] if dev else None
        return v


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders among `paths`; a folder without run.json is searched one level down
    (so `bench report results/` takes every run in results/). Duplicates are dropped."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise BenchError(f"The run folder {p} does not exist. Pass folders written by "
                             "`bench run` (each holds run.json and episodes.jsonl).")
        if not p.is_dir():
            raise BenchError(f"{p} is a file, not a run folder. Pass folders written by `bench run`.")
        if (p / "run.json").is_file():
            found.append(p)
            continue
        children = sorted(c for c in p.iterdir() if c.is_dir() and (c / "run.json").is_file())
        if not children:
            raise BenchError(f"{p} is not a run folder (no run.json) and holds none. Pass folders "
                             "written by `bench run`, or a folder that contains them.")
        found += children
    unique, seen = [], set()
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / RECORD).is_file():
        raise BenchError(f"{path} is not a run folder: it has no run.json. Pass folders "
                         "written by `bench run`.")
    record = read_record(path / RECORD)
    config, episodes = record["config"], record.get("episodes", {})
    content_hash = episodes.get("content_hash")
    if not content_hash:
        raise BenchError(f"{path / 'run.json'} lacks the run configuration or the episode file's "
                         "content hash; it was not written by this version of `bench run`.")
    notes: list[str] = []
    log = path / ROWS
    if not log.exists():
        raise BenchError(f"{path} has no episodes.jsonl: the run wrote no results (it stopped "
                         "before its first episode). Re-run it or leave it out.")
    # repair=False: reading must not cut the last line of a run that is still writing it
    rows = read_rows(log, episodes=config["episodes"], repair=False, warn=lambda m: notes.append(
        f"{path.name}: the last line of episodes.jsonl is incomplete and was skipped."))
    df = pd.DataFrame(rows)
    for col, default in (("status", "ok"), ("loss_curve", None), ("reason", "")):
        if col not in df:
            df[col] = default
    missing = [c for c in ("episode", "method", "accuracy") if c not in df]
    if missing or df.empty:
        raise BenchError(f"{log} holds no result rows with episode, method and accuracy.")
    finished = "finished" in record
    if not finished:
        per_method = df.groupby("method", sort=False).size()
        notes.append(f"{path.name} did not finish: {per_method.min()} to {per_method.max()} of "
                     f"{config.get('episodes')} episodes per method are reported.")
    emb = path / "embeddings.npz"
    return Run(path=path, name=path.name, record=record, config=config, rows=df,
               content_hash=str(content_hash), episodes_key=str(episodes.get("key", "")),
               finished=finished, embeddings=emb if emb.is_file() else None, notes=notes)
