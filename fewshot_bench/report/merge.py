"""Merging: the runs become setting rows and method columns (labels) of one per-episode table
(`merge_runs` -> `Merged`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import BenchError
from .fields import (ALWAYS_SHOWN, FIELD_NAMES, METHOD_ORDER, SETTING_FIELDS, WEIGHTS_FIELD,
                     _fmt_value, method_fields)
from .runs import Run


@dataclass
class Entry:
    """One method of one run: a column label in one setting row."""

    run: Run
    method: str
    label: str
    setting_id: int
    values: dict


@dataclass
class Merged:
    runs: list[Run]
    entries: list[Entry]  # kept entries, one per (setting_id, label)
    settings: pd.DataFrame  # one row per setting id: SETTING_FIELDS, content_hash, episodes_key, title, slug
    shown: list[tuple[str, str]]  # (column, header) of the setting columns tables show
    labels: list[str]  # column order
    label_info: dict[str, dict]  # label -> {"method": ..., field: value}
    rows: pd.DataFrame  # per episode: setting_id, label, method, run, episode, accuracy, status, loss_curve
    notes: list[str]
    names: dict[str, str] = field(default_factory=dict)  # label -> display name (`--label`)
    dataset_names: dict[str, str] = field(default_factory=dict)  # dataset value -> how tables show it
    method_names: dict[str, str] = field(default_factory=dict)  # method -> display name (`--label`)

    def name(self, label: str) -> str:
        """The display name of `label` (its `--label` name, else the label itself)."""
        return self.names.get(label, label)

    def setting_align(self) -> str:
        numeric = {"image_size", "ways", "shots", "queries", "n_episodes"}
        return "".join("r" if k in numeric else "l" for k, _ in self.shown)

    def setting_cells(self, sid: int) -> list[str]:
        s = self.settings.loc[sid]
        return [self.dataset_names.get(s[col], s[col]) if col == "dataset" else _fmt_value(s[col])
                for col, _ in self.shown]

    def entries_of(self, sid: int) -> list[Entry]:
        return [e for e in self.entries if e.setting_id == sid]

    def runs_of(self, label: str, sid: int | None = None) -> list[str]:
        return [e.run.name for e in self.entries if e.label == label and (sid is None or e.setting_id == sid)]


def _sort_key(v):
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, (bool, int, float, np.integer, np.floating)):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def merge_runs(runs: Sequence[Run]) -> Merged:
    """Labels, settings and the per-episode table of `runs` (see the package docstring)."""
    if not runs:
        raise BenchError("No run folders to report on.")
    notes = [n for r in runs for n in r.notes]
    # unique display names for runs that share a folder name
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{r.path.parent.name}/{r.path.name}"

    # settings: SETTING_FIELDS + content hash
    def skey(r: Run) -> tuple:
        return tuple(r.setting[k] for k, _ in SETTING_FIELDS) + (r.content_hash,)

    keys = sorted({skey(r) for r in runs}, key=lambda t: tuple(_sort_key(v) for v in t))
    sid_of = {k: i for i, k in enumerate(keys)}
    first_run = {}
    for r in runs:
        first_run.setdefault(skey(r), r)
    settings = pd.DataFrame(
        [{**{k: v for (k, _), v in zip(SETTING_FIELDS, key[:-1])}, "content_hash": key[-1],
          "episodes_key": first_run[key].episodes_key} for key in keys]
    )
    settings.index.name = "setting_id"

    # which setting fields vary -> shown columns; an episode-file column if rows still collide
    def varies(k: str) -> bool:
        return settings[k].map(repr).nunique() > 1

    shown = [(k, h) for k, h in SETTING_FIELDS if k in ALWAYS_SHOWN or varies(k)]
    visible = settings[[k for k, _ in shown]].astype(str).agg("|".join, axis=1)
    if visible.duplicated(keep=False).any():
        key_hashes = settings.groupby("episodes_key")["content_hash"].nunique()
        settings["episode_file"] = [
            k if key_hashes[k] == 1 else f"{k} #{h[:8]}"
            for k, h in zip(settings["episodes_key"], settings["content_hash"])
        ]
        shown.append(("episode_file", "episode file"))
    dataset_names = _dataset_names(settings["dataset"])
    settings["title"] = [_setting_title(settings.loc[i], shown, dataset_names) for i in settings.index]
    settings["title_no_file"] = [_setting_title(settings.loc[i], [x for x in shown if x[0] != "episode_file"],
                                                dataset_names)
                                 for i in settings.index]
    settings["slug"] = _unique_slugs(settings["title"])

    # labels: method + the fields of method_fields that vary between runs of one setting
    # (a field that differs only between rows, e.g. the per --tune mode lr, is the row's)
    raw = [(r, m) for r in runs for m in pd.unique(r.rows["method"])]
    varying: dict[str, list[str]] = {}
    for m in dict.fromkeys(m for _, m in raw):
        per_setting: dict[int, list[dict]] = {}
        for r, mm in raw:
            if mm == m:
                per_setting.setdefault(sid_of[skey(r)], []).append(r.values())
        varying[m] = [f for f in method_fields(m)
                      if any(len({repr(v[f]) for v in vals}) > 1 for vals in per_setting.values())]

    def label_of(r: Run, m: str) -> str:
        v = r.values()
        parts = [f"{FIELD_NAMES.get(f, f)}={_fmt_value(v[f])}" for f in varying[m]]
        return f"{m}({','.join(parts)})" if parts else m

    entries = [Entry(r, m, label_of(r, m), sid_of[skey(r)], r.values()) for r, m in raw]

    # one entry per (setting, label): identical repeats are dropped, differing ones renamed
    kept: list[Entry] = []
    groups: dict[tuple[int, str], list[Entry]] = {}
    for e in entries:
        groups.setdefault((e.setting_id, e.label), []).append(e)
    for (sid, label), es in groups.items():
        if len(es) == 1:
            kept.append(es[0])
            continue
        ref = _results_of(es[0])
        same = [e for e in es[1:] if _results_of(e).equals(ref)]
        differ = [e for e in es[1:] if e not in same]
        if same:
            notes.append(f"{label} of {', '.join(e.run.name for e in same)} repeats {es[0].run.name} "
                         "(same settings, same episodes, same results): counted once.")
        if not differ:
            kept.append(es[0])
            continue
        group = [es[0]] + differ
        for e in group:
            e.label = f"{label}@{e.run.name}"
            kept.append(e)
        notes.append(f"{label} gives different results in {', '.join(e.run.name for e in group)} "
                     "although no recorded hyperparameter differs; they are shown as "
                     f"{', '.join(e.label for e in group)}.")

    label_info: dict[str, dict] = {}
    for e in kept:
        label_info.setdefault(e.label, {"method": e.method, **e.values})

    def order(label: str):
        info = label_info[label]
        m = info["method"]
        rank = METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER)
        # the pretrained network before its fine-tunes, then by value
        keys = tuple((0, 0.0, "") if f == WEIGHTS_FIELD and info.get(f) == "pretrained"
                     else _sort_key(info.get(f)) for f in varying.get(m, []))
        return (rank, m, keys, label)

    labels = sorted(label_info, key=order)
    kept.sort(key=lambda e: (e.setting_id, labels.index(e.label)))

    frames = []
    for e in kept:
        df = e.run.rows.loc[e.run.rows["method"] == e.method,
                            ["episode", "method", "accuracy", "status", "loss_curve"]].copy()
        df.insert(0, "label", e.label)
        df.insert(0, "run", e.run.name)
        df.insert(0, "setting_id", e.setting_id)
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    return Merged(runs=list(runs), entries=kept, settings=settings, shown=shown, labels=labels,
                  label_info=label_info, rows=rows, notes=notes, dataset_names=dataset_names)


def display_names(merged: Merged, names: dict[str, str] | None) -> dict[str, str]:
    """label -> display name from `names` (`bench report --label KEY=NAME`): KEY is a column
    label (`schane(lambda=0.5)`), or a method, whose name then replaces the method part of
    each of its labels (`schane=SCHaNe`: `SCHaNe(lambda=0.5)`); an exact label wins. A KEY
    no column or method has, an empty NAME, or two columns shown alike: BenchError."""
    names = dict(names or {})
    methods = {i["method"] for i in merged.label_info.values()}
    unknown = [k for k in names if k not in merged.label_info and k not in methods]
    if unknown:
        raise BenchError(f"--label {unknown[0]}=...: no column or method of that name. Columns: "
                         f"{', '.join(merged.labels)}; methods: {', '.join(sorted(methods))}.")
    empty = [k for k, v in names.items() if not str(v).strip()]
    if empty:
        raise BenchError(f"--label {empty[0]}= gives an empty name; write --label {empty[0]}=NAME.")
    out = {}
    for lb in merged.labels:
        m = merged.label_info[lb]["method"]
        if lb in names:
            out[lb] = str(names[lb])
        elif m in names and lb.startswith(m):
            out[lb] = str(names[m]) + lb[len(m):]
    shown: dict[str, str] = {}
    for lb in merged.labels:
        name = out.get(lb, lb)
        if name in shown:
            raise BenchError(f"--label would show {shown[name]} and {lb} both as {name!r}; give them "
                             "different names.")
        shown[name] = lb
    return out


def parse_label_option(value: str) -> tuple[str, str]:
    """KEY=NAME of `--label`, split at the first "=" outside parentheses (a label such as
    `schane(lambda=0.5)` holds "=" in its parentheses; NAME may hold any)."""
    depth = 0
    for i, ch in enumerate(value):
        depth += (ch == "(") - (ch == ")")
        if ch == "=" and depth == 0:
            return value[:i].strip(), value[i + 1:].strip()
    raise BenchError(f"--label {value!r} lacks '='; write --label KEY=NAME, e.g. --label ce=CE "
                     "--label schane=SCHaNe.")


def _results_of(e: Entry) -> pd.DataFrame:
    df = e.run.rows.loc[e.run.rows["method"] == e.method, ["episode", "accuracy", "status"]]
    return df.sort_values("episode").reset_index(drop=True)


_FOLDER = "folder:"  # fewshot_bench.data.FOLDER_PREFIX (not imported: it loads the readers)


def _dataset_names(values) -> dict[str, str]:
    """How tables and figures name each data set: a `folder:PATH` data set by the folder's
    name (more of its path where two folders share a name), never the absolute local path;
    the CSV files keep the value the run recorded."""
    folders = sorted({str(v) for v in values if str(v).startswith(_FOLDER)})
    parts = {v: PurePath(v[len(_FOLDER):].rstrip("/\\") or "/").parts or ("/",) for v in folders}
    out = {}
    for v in folders:
        k = 1
        while k < len(parts[v]) and sum(parts[w][-k:] == parts[v][-k:] for w in folders) > 1:
            k += 1
        out[v] = "/".join(p for p in parts[v][-k:] if p not in ("/", "\\")) or v
    return out


def _setting_title(s: pd.Series, shown, dataset_names: dict[str, str] | None = None) -> str:
    ds = str(s["dataset"])
    parts = [(dataset_names or {}).get(ds, ds), str(s["backbone"]), f"{s['ways']}-way {s['shots']}-shot"]
    cols = {k for k, _ in shown}
    extra = {"split": "split {}", "image_size": "{} px", "tune": "tune={}",
             "queries": "{} queries", "n_episodes": "{} episodes", "episode_file": "{}"}
    parts += [fmt.format(_fmt_value(s[k])) for k, fmt in extra.items() if k in cols]
    return " · ".join(parts)


def _unique_slugs(titles) -> list[str]:
    out = []
    for t in titles:
        base = re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-")[:60] or "setting"
        slug, n = base, 1
        while slug in out:
            n += 1
            slug = f"{base}-{n}"
        out.append(slug)
    return out
