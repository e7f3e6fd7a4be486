"""`bench report`: merge run folders into comparison tables, figures and a report.

A run folder (written by `bench run`) holds run.json (configuration, episode file and its
content hash), episodes.jsonl (one row per episode and method) and, with `--embeddings N`,
embeddings.npz. This module:

1. loads the folders (`load_run`; a folder of run folders is expanded);
2. merges them (`merge_runs`): every (run, method) becomes a column *label*. A label is the
   method name plus the hyperparameters that matter to that method and differ between the
   merged runs, e.g. `schane(lambda=0.5)`; every run becomes a *setting* row: data set,
   backbone, ways, shots, ... and the episode file's content hash;
3. tabulates (`accuracy_table`, `paired_results`, `embedding_table`) with the statistics of
   `analysis` (mean with t-interval, paired t-test, Wilcoxon, wins/ties/losses);
4. draws the figures (`plots`) and writes Markdown, CSV, LaTeX and a self-contained HTML
   report (`build_report`).

Pairing rule. Two labels are compared episode by episode only when they were scored on the
same episode file (same content hash): methods of one run always are, methods of different
runs are when their episode hashes agree. Runs whose files differ land on separate rows
and are never paired: by default the report notes each comparison it therefore could not
make; a comparison asked for explicitly with `--pair A B` is refused (BenchError, exit 2).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import analysis
from .analysis import _paired_rows
from .config import CONTRASTIVE
from .errors import BenchError
from .fileio import write_atomic

__all__ = [
    "FORMATS",
    "Run",
    "Merged",
    "Report",
    "Table",
    "find_run_dirs",
    "load_run",
    "merge_runs",
    "accuracy_table",
    "paired_results",
    "embedding_table",
    "build_report",
]

FORMATS = ("md", "csv", "latex", "html")

# (key, header) of the fields that make a row of the main table; shown when they vary,
# data set / backbone / shots always.
SETTING_FIELDS = (
    ("dataset", "data set"), ("split", "split"), ("backbone", "backbone"),
    ("weights", "weights"), ("image_size", "image size"), ("tune", "tune"),
    ("ways", "ways"), ("shots", "shots"), ("queries", "queries"), ("n_episodes", "episodes"),
)
ALWAYS_SHOWN = ("dataset", "backbone", "shots")
# Hyperparameters that change a method's results (a label shows those that vary).
LOSS_FIELDS = ("lam", "tau", "beta", "detach_weights")
TRAIN_FIELDS = ("steps", "lr", "optimizer", "weight_decay", "logit_scale", "views", "bank_views")
HYPERPARAMETERS = ("lam", "tau", "beta")  # the sweeps the hyperparameter figure draws
FIELD_NAMES = {"lam": "lambda", "detach_weights": "detach", "weight_decay": "wd",
               "logit_scale": "scale"}
METHOD_ORDER = ("protonet", "linear-probe", "ce", "schane", "schane-detached", "supcon", "hcl")


def method_fields(method: str) -> tuple[str, ...]:
    """The configuration fields that change `method`'s results (besides the setting)."""
    if method == "protonet":  # frozen pretrained embeddings, clean views: no training
        return ("device",)
    if method == "linear-probe":  # a plain linear head: no logit scale
        return tuple(f for f in TRAIN_FIELDS if f != "logit_scale") + ("device",)
    if method == "ce":  # lambda = 0: tau, beta and the weights never enter its loss
        return TRAIN_FIELDS + ("device",)
    if method == "schane-detached":  # detached whatever --detach-weights says
        return tuple(f for f in LOSS_FIELDS if f != "detach_weights") + TRAIN_FIELDS + ("device",)
    return LOSS_FIELDS + TRAIN_FIELDS + ("device",)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


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
        weights = ((rec.get("backbone") or {}).get("weights") or {})
        w = weights.get("sha256") if isinstance(weights, dict) else None
        return {
            "dataset": c.get("dataset"), "split": c.get("split"), "backbone": c.get("backbone"),
            "weights": (w[:12] if w else c.get("weights")) or "default",
            "image_size": (rec.get("data") or {}).get("image_size") or c.get("image_size"),
            "tune": c.get("tune"), "ways": c.get("ways"),
            "shots": c.get("shots_dist") or c.get("shots"),  # imbalanced: e.g. uniform:1-5
            "queries": c.get("queries"), "n_episodes": c.get("episodes"),
        }

    def values(self) -> dict:
        """Hyperparameter values of this run (method_fields of every method)."""
        v = {f: self.config.get(f) for f in LOSS_FIELDS + TRAIN_FIELDS}
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
    try:
        record = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise BenchError(f"{path} is not a run folder: it has no run.json. Pass folders "
                         "written by `bench run`.") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"Cannot read {path / 'run.json'} ({exc}); the run folder is damaged.") from exc
    config = record.get("config") or {}
    episodes = record.get("episodes") or {}
    content_hash = episodes.get("content_hash")
    if not config or not content_hash:
        raise BenchError(f"{path / 'run.json'} lacks the run configuration or the episode file's "
                         "content hash; it was not written by this version of `bench run`.")
    notes: list[str] = []
    rows = []
    log = path / "episodes.jsonl"
    if not log.is_file():
        raise BenchError(f"{path} has no episodes.jsonl: the run wrote no results (it stopped "
                         "before its first episode). Re-run it or leave it out.")
    lines = log.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:  # a run killed while writing its last line
                notes.append(f"{path.name}: the last line of episodes.jsonl is incomplete and was skipped.")
                continue
            raise BenchError(f"{log} line {i + 1} is not valid JSON; the file is damaged.") from None
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


# --------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------


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

    def setting_align(self) -> str:
        numeric = {"image_size", "ways", "shots", "queries", "n_episodes"}
        return "".join("r" if k in numeric else "l" for k, _ in self.shown)

    def setting_cells(self, sid: int) -> list[str]:
        s = self.settings.loc[sid]
        return [_fmt_value(s[col]) for col, _ in self.shown]

    def entries_of(self, sid: int) -> list[Entry]:
        return [e for e in self.entries if e.setting_id == sid]

    def runs_of(self, label: str, sid: int | None = None) -> list[str]:
        return [e.run.name for e in self.entries if e.label == label and (sid is None or e.setting_id == sid)]


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(v)


def _sort_key(v):
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, (bool, int, float, np.integer, np.floating)):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def merge_runs(runs: Sequence[Run]) -> Merged:
    """Labels, settings and the per-episode table of `runs` (see the module docstring)."""
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
        if k == "weights":  # other backbones have other weights anyway
            return bool(settings.groupby("backbone")["weights"].nunique().max() > 1)
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
    settings["title"] = [_setting_title(settings.loc[i], shown) for i in settings.index]
    settings["title_no_file"] = [_setting_title(settings.loc[i], [x for x in shown if x[0] != "episode_file"])
                                 for i in settings.index]
    settings["slug"] = _unique_slugs(settings["title"])

    # labels: method + the fields of method_fields that vary between runs
    raw = [(r, m) for r in runs for m in pd.unique(r.rows["method"])]
    varying: dict[str, list[str]] = {}
    for m in dict.fromkeys(m for _, m in raw):
        vals = [r.values() for r, mm in raw if mm == m]
        varying[m] = [f for f in method_fields(m) if len({repr(v[f]) for v in vals}) > 1]

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
        return (rank, m, tuple(_sort_key(info.get(f)) for f in varying.get(m, [])), label)

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
                  label_info=label_info, rows=rows, notes=notes)


def _results_of(e: Entry) -> pd.DataFrame:
    df = e.run.rows.loc[e.run.rows["method"] == e.method, ["episode", "accuracy", "status"]]
    return df.sort_values("episode").reset_index(drop=True)


def _setting_title(s: pd.Series, shown) -> str:
    parts = [str(s["dataset"]), str(s["backbone"]), f"{s['ways']}-way {s['shots']}-shot"]
    cols = {k for k, _ in shown}
    extra = {"split": "split {}", "weights": "weights {}", "image_size": "{} px", "tune": "tune={}",
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


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


@dataclass
class Table:
    """A table independent of its output format; `bold` holds (row, column) positions."""

    headers: list[str]
    rows: list[list[str]]
    align: str
    bold: set = field(default_factory=set)

    def markdown(self) -> str:
        def cell(i, j, c):
            c = c.replace("|", "\\|")
            return f"**{c}**" if (i, j) in self.bold else c

        out = ["| " + " | ".join(h.replace("|", "\\|") for h in self.headers) + " |",
               "|" + "|".join(":---" if a == "l" else "---:" for a in self.align) + "|"]
        out += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(r)) + " |"
                for i, r in enumerate(self.rows)]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        rows = [[c + (" *" if (i, j) in self.bold else "") for j, c in enumerate(r)]
                for i, r in enumerate(self.rows)]
        return analysis._text_table(self.headers, rows, self.align) + "\n"

    def latex(self) -> str:
        def cell(i, j, c):
            c = _latex_escape(c)
            return f"\\textbf{{{c}}}" if (i, j) in self.bold else c

        lines = [f"\\begin{{tabular}}{{{self.align}}}", "\\toprule",
                 " & ".join(_latex_escape(h) for h in self.headers) + " \\\\", "\\midrule"]
        lines += [" & ".join(cell(i, j, c) for j, c in enumerate(r)) + " \\\\"
                  for i, r in enumerate(self.rows)]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        def cell(i, j, c):
            c = html.escape(c).replace(" +- ", " ± ")
            return f"<strong>{c}</strong>" if (i, j) in self.bold else c

        al = {"l": "left", "r": "right"}
        head = "".join(f'<th style="text-align:{al[a]}">{html.escape(h)}</th>'
                       for h, a in zip(self.headers, self.align))
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align:{al[a]}">{cell(i, j, c)}</td>'
                             for j, (c, a) in enumerate(zip(r, self.align))) + "</tr>"
            for i, r in enumerate(self.rows))
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(s: str) -> str:
    s = "".join(_LATEX.get(ch, ch) for ch in s)
    return s.replace(" +- ", r" $\pm$ ")


def accuracy_table(merged: Merged, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (setting, label): the setting's columns, label, method, n, failed, mean,
    ci95, std (percent), accuracy ("62.41 +- 0.83") and best (True where this label has the
    highest mean of its row and its interval overlaps no other label's interval)."""
    out = []
    for sid in merged.settings.index:
        g = merged.rows[merged.rows["setting_id"] == sid]
        if g.empty:
            continue
        df = g[["episode", "label", "accuracy", "status"]].rename(columns={"label": "method"})
        s = analysis.method_summary(df, confidence).rename(columns={"method": "label"})
        s["best"] = False
        ok = s[(s["n"] > 1) & np.isfinite(s["ci95"])]
        if len(s) > 1 and len(ok) == len(s):
            i = ok["mean"].idxmax()
            low = ok.loc[i, "mean"] - ok.loc[i, "ci95"]
            others = ok.drop(index=i)
            if (low > others["mean"] + others["ci95"]).all():
                s.loc[i, "best"] = True
        s.insert(0, "setting_id", sid)
        s.insert(2, "method", s["label"].map(lambda lb: merged.label_info[lb]["method"]))
        out.append(s)
    t = pd.concat(out, ignore_index=True)
    t["_order"] = t["label"].map(merged.labels.index)
    t = t.sort_values(["setting_id", "_order"]).drop(columns="_order").reset_index(drop=True)
    return _with_setting_columns(merged, t)


def _with_setting_columns(merged: Merged, t: pd.DataFrame) -> pd.DataFrame:
    """Prefix a per-setting table with every setting field (CSV readers filter on them)."""
    cols = [k for k, _ in SETTING_FIELDS] + ["episodes_key", "content_hash"]
    left = merged.settings[cols].rename(columns={"content_hash": "episodes_hash"})
    t = t.merge(left, left_on="setting_id", right_index=True, how="left")
    front = ["setting_id"] + cols[:-1] + ["episodes_hash"]
    return t[front + [c for c in t.columns if c not in front]]


def main_table_view(merged: Merged, acc: pd.DataFrame) -> Table:
    """Rows: settings; columns: labels; cells "62.41 +- 0.83", best bold."""
    labels = [lb for lb in merged.labels if lb in set(acc["label"])]
    headers = [h for _, h in merged.shown] + labels
    rows, bold = [], set()
    for i, sid in enumerate(pd.unique(acc["setting_id"])):
        g = acc[acc["setting_id"] == sid].set_index("label")
        cells = merged.setting_cells(sid)
        for lb in labels:
            if lb not in g.index:
                cells.append("-")
                continue
            r = g.loc[lb]
            c = r["accuracy"] + (f" ({int(r['failed'])} failed)" if r["failed"] else "")
            if r["best"]:
                bold.add((i, len(cells)))
            cells.append(c)
        rows.append(cells)
    align = merged.setting_align() + "r" * len(labels)
    return Table(headers, rows, align, bold)


def _train_key(info: dict) -> tuple:
    return tuple(repr(info.get(f)) for f in TRAIN_FIELDS + ("device",))


def default_pairs(labels: Sequence[str], info: dict[str, dict]) -> list[tuple[str, str]]:
    """CE against every SCHaNe-like label trained the same way (same steps, lr, ...),
    SCHaNe against SCHaNe with detached weights, then every label against the ProtoNet
    reference; (a, b) reads "b - a"."""
    pairs = []
    ce = [lb for lb in labels if info[lb]["method"] == "ce"]
    other = [lb for lb in labels if info[lb]["method"] in CONTRASTIVE]
    pairs += [(a, b) for a in ce for b in other if _train_key(info[a]) == _train_key(info[b])]
    same = ("lam", "tau", "beta") + TRAIN_FIELDS + ("device",)
    pairs += [(a, b) for a in labels if info[a]["method"] == "schane"
              for b in labels if info[b]["method"] == "schane-detached"
              and all(repr(info[a].get(f)) == repr(info[b].get(f)) for f in same)]
    for p in (lb for lb in labels if info[lb]["method"] == "protonet"):
        pairs += [(p, x) for x in labels if info[x]["method"] != "protonet"]
    return pairs


def resolve_label(merged: Merged, name: str) -> str:
    """An exact label, or a method name that has exactly one label."""
    if name in merged.label_info:
        return name
    matches = [lb for lb, i in merged.label_info.items() if i["method"] == name]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(merged.labels)
    if matches:
        raise BenchError(f"--pair {name!r} is ambiguous: the runs hold {', '.join(matches)}. "
                         "Name one of them (quote it in the shell).")
    raise BenchError(f"--pair names {name!r}, which no run holds. Labels: {known}.")


def _group_key(merged: Merged, sid: int) -> tuple:
    s = merged.settings.loc[sid]
    return tuple(repr(s[k]) for k, _ in SETTING_FIELDS)


def _mismatch_message(merged: Merged, a: str, b: str, sids_a, sids_b) -> str:
    def where(label, sids):
        parts = []
        for sid in sids:
            s = merged.settings.loc[sid]
            parts.append(f"{', '.join(merged.runs_of(label, sid))}: {s['episodes_key']} "
                         f"#{s['content_hash'][:12]}")
        return "; ".join(parts)

    key_a = {merged.settings.loc[s, "episodes_key"] for s in sids_a}
    key_b = {merged.settings.loc[s, "episodes_key"] for s in sids_b}
    why = (" The files have the same name but different contents (the episode file or the data "
           "set changed between the runs)." if key_a & key_b else "")
    title = merged.settings.loc[next(iter(sids_a)), "title_no_file"]
    return (f"{a} and {b} ({title}) were scored on different episode files ({a} in {where(a, sids_a)}; "
            f"{b} in {where(b, sids_b)}), so their episodes do not correspond and they cannot be "
            f"paired.{why}")


def paired_results(merged: Merged, pairs: Sequence[tuple[str, str]] | None = None,
                   confidence: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """Paired comparisons (analysis.paired_comparison) of label pairs within each setting.

    `pairs`: explicit (a, b) label or method names; None: `default_pairs` per setting.
    Pairs whose labels were scored on different episode files are refused when explicit
    (BenchError) and noted otherwise. Returns (table, notes).
    """
    notes: list[str] = []
    explicit = None
    if pairs:
        explicit = []
        for a, b in pairs:
            ra, rb = resolve_label(merged, a), resolve_label(merged, b)
            if ra == rb:
                raise BenchError(f"--pair {a} {b} names the same column twice.")
            explicit.append((ra, rb))

    present = {sid: [e.label for e in merged.entries_of(sid)] for sid in merged.settings.index}
    # pairs across episode files of otherwise equal settings
    groups: dict[tuple, list[int]] = {}
    for sid in merged.settings.index:
        groups.setdefault(_group_key(merged, sid), []).append(sid)
    for sids in groups.values():
        union = [lb for lb in merged.labels if any(lb in present[s] for s in sids)]
        wanted = explicit if explicit is not None else default_pairs(union, merged.label_info)
        for a, b in wanted:
            sa = [s for s in sids if a in present[s]]
            sb = [s for s in sids if b in present[s]]
            if sa and sb and not set(sa) & set(sb):
                msg = _mismatch_message(merged, a, b, sa, sb)
                if explicit is not None:
                    raise BenchError(msg + " Re-run both methods on the same episode file "
                                     "(same --episodes-dir, --seed, --episodes), or drop --pair to "
                                     "report them side by side, unpaired.")
                notes.append(msg + " They are reported unpaired.")
    if explicit is not None:
        for a, b in explicit:
            if not any(a in p and b in p for p in present.values()):
                if not any(any(a in present[s] for s in sids) and any(b in present[s] for s in sids)
                           for sids in groups.values()):
                    raise BenchError(f"--pair {a} {b}: these were never run in the same setting "
                                     "(data set, backbone, ways, shots, ...), so there is nothing to pair.")

    cols = ["a", "b", "n", "mean_diff", "ci95", "t_stat", "t_p", "wilcoxon_p",
            "wins", "ties", "losses", "a_only", "b_only"]
    out = []
    for sid in merged.settings.index:
        labels = present[sid]
        todo = [(a, b) for a, b in (explicit if explicit is not None else default_pairs(labels, merged.label_info))
                if a in labels and b in labels]
        if not todo:
            continue
        g = merged.rows[merged.rows["setting_id"] == sid]
        df = g[["episode", "label", "accuracy", "status"]].rename(columns={"label": "method"})
        for a, b in todo:
            try:
                r = analysis.paired_comparison(df, a, b, confidence)
            except BenchError as exc:
                notes.append(f"{merged.settings.loc[sid, 'title']}: {exc}")
                continue
            out.append({"setting_id": sid, **r})
    t = pd.DataFrame(out, columns=["setting_id"] + cols)
    return _with_setting_columns(merged, t), notes


def paired_table_view(merged: Merged, paired: pd.DataFrame) -> Table:
    headers = [h for _, h in merged.shown]
    rows, align = [], merged.setting_align()
    for sid in pd.unique(paired["setting_id"]):
        g = paired[paired["setting_id"] == sid]
        h, body, al = _paired_rows(g)
        rows += [merged.setting_cells(sid) + r for r in body]
        headers_out, align_out = headers + h, align + al
    if not rows:
        return Table(headers + ["comparison (b - a)"], [], align + "l")
    return Table(headers_out, rows, align_out)


# --------------------------------------------------------------------------------------
# Embedding quality
# --------------------------------------------------------------------------------------


def embedding_table(merged: Merged) -> tuple[pd.DataFrame, dict[int, list[tuple]]]:
    """(scores: one row per (setting, label) with saved embeddings: episodes and the mean and
    95% CI over saved episodes of each score; pca: setting id -> [(label, X, y, episode)]
    for one episode every label of the setting saved, the lowest such id)."""
    from . import embedding_quality as eq

    cache: dict[Path, tuple] = {}
    rows, per_setting = [], {}
    for e in merged.entries:
        if e.run.embeddings is None:
            continue
        if e.run.embeddings not in cache:
            cache[e.run.embeddings] = eq.load_embeddings(e.run.embeddings)
        episodes, labels, per_method = cache[e.run.embeddings]
        if e.method not in per_method:
            continue
        z = per_method[e.method]
        scores = eq.embedding_scores(z, labels, episodes)
        rows.append({"setting_id": e.setting_id, "label": e.label, "method": e.method,
                     **eq.summarise_scores(scores)})
        per_setting.setdefault(e.setting_id, []).append((e.label, episodes, labels, z))
    pca: dict[int, list[tuple]] = {}
    for sid, items in per_setting.items():
        common = set.intersection(*(set(map(int, ep)) for _, ep, _, _ in items))
        ep = min(common) if common else None
        chosen = []
        for label, episodes, labels, z in items:
            i = int(np.flatnonzero(episodes == ep)[0]) if ep is not None else 0
            chosen.append((label, z[i].astype(np.float64), labels, int(episodes[i])))
        pca[sid] = chosen
    cols = ["setting_id", "label", "method", "episodes"]
    for c in eq.SCORES:
        cols += [c, f"{c}_ci95"]
    t = pd.DataFrame(rows, columns=cols)
    if not t.empty:
        t = _with_setting_columns(merged, t)
    return t, pca


def _fmt_score(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(half) else f"{mean:.3f} +- {half:.3f}"


def embedding_table_view(merged: Merged, emb: pd.DataFrame) -> Table:
    from .embedding_quality import SCORES

    headers = [h for _, h in merged.shown] + ["method", "episodes"] + [t for t, _ in SCORES.values()]
    rows = []
    for r in emb.itertuples(index=False):
        d = r._asdict()
        rows.append(merged.setting_cells(d["setting_id"]) + [d["label"], str(d["episodes"])]
                    + [_fmt_score(d[c], d[f"{c}_ci95"]) for c in SCORES])
    return Table(headers, rows, merged.setting_align() + "l" + "r" * (1 + len(SCORES)))


def runs_table_view(merged: Merged) -> Table:
    headers = ["run", "setting", "episode file", "content hash", "columns", "finished", "git commit"]
    rows = []
    for r in merged.runs:
        cols = [e.label for e in merged.entries if e.run is r]
        git = (r.record.get("git") or {})
        commit = (git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
        sid = next((e.setting_id for e in merged.entries if e.run is r), None)
        rows.append([str(r.path), merged.settings.loc[sid, "title"] if sid is not None else "-",
                     r.episodes_key, r.content_hash[:12], ", ".join(cols) or "(all repeated)",
                     "yes" if r.finished else "no", commit])
    return Table(headers, rows, "lllllll")


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def _figures(merged: Merged, acc: pd.DataFrame, paired: pd.DataFrame,
             pca: dict[int, list[tuple]], fig_dir: Path) -> list[tuple[str, str, Path]]:
    """Draw every figure; returns (section, caption, png path) in report order."""
    from . import plots

    fig_dir.mkdir(parents=True, exist_ok=True)
    colors = plots.label_colors(merged.labels, {lb: i["method"] for lb, i in merged.label_info.items()})
    titles = merged.settings["title"].to_dict()
    out: list[tuple[str, str, Path]] = []

    out.append(("accuracy", "Mean accuracy per setting and method, with 95% confidence intervals "
                "over episodes.",
                plots.plot_accuracy(acc, titles, merged.labels, colors, fig_dir / "accuracy")[0]))

    # paired scatter + differences: the CE vs SCHaNe-like pairs (else the first pair) per setting
    scatter = []
    for sid in pd.unique(paired["setting_id"]) if len(paired) else []:
        g = paired[paired["setting_id"] == sid]
        main = [(r.a, r.b) for r in g.itertuples() if merged.label_info[r.a]["method"] == "ce"
                and merged.label_info[r.b]["method"] != "protonet"]
        for a, b in main or [(g.iloc[0]["a"], g.iloc[0]["b"])]:
            xa, xb = _paired_values(merged, sid, a, b)
            r = g[(g["a"] == a) & (g["b"] == b)].iloc[0]
            scatter.append(plots.PairPanel(titles[sid], a, b, xa, xb, r["mean_diff"], r["ci95"],
                                           int(r["wins"]), int(r["ties"]), int(r["losses"])))
    if scatter:
        out.append(("paired", "Per-episode accuracy of two methods on the same episodes (each "
                    "point one episode; jittered, since accuracies are multiples of 1/(N*Q)).",
                    plots.plot_paired_scatter(scatter, colors, fig_dir / "paired_scatter")[0]))
        out.append(("paired", "Distribution of the per-episode differences, with their mean "
                    "and its 95% confidence interval.",
                    plots.plot_differences(scatter, colors, fig_dir / "paired_differences")[0]))

    curves = []
    for sid in merged.settings.index:
        g = merged.rows[(merged.rows["setting_id"] == sid) & (merged.rows["status"] == "ok")]
        per_label = {}
        for lb in merged.labels:
            c = [x for x in g.loc[g["label"] == lb, "loss_curve"] if isinstance(x, list) and x]
            if c:
                n = max(map(len, c))
                arr = np.full((len(c), n), np.nan)
                for i, x in enumerate(c):
                    arr[i, :len(x)] = [np.nan if v is None else v for v in x]
                per_label[lb] = arr
        if per_label:
            curves.append((titles[sid], per_label))
    if curves:
        out.append(("loss", "Fine-tuning loss per step (each method's own objective), mean over "
                    "episodes with a 95% confidence band.",
                    plots.plot_loss_curves(curves, colors, fig_dir / "loss_curves")[0]))

    sweep = _sweep_panels(merged, acc)
    if sweep:
        out.append(("hyper", "Accuracy against the SCHaNe hyperparameters the runs vary (95% CI); "
                    "dashed: CE of the same setting with its 95% band.",
                    plots.plot_hyperparameter(sweep, fig_dir / "hyperparameters")[0]))

    for sid, items in pca.items():
        from .embedding_quality import episode_scores

        panels = [(label, x, y, episode_scores(x, y)) for label, x, y, _ in items]
        ep = items[0][3]
        slug = merged.settings.loc[sid, "slug"]
        out.append(("embeddings", f"Query embeddings of episode {ep} ({titles[sid]}), first two "
                    "principal components per method, coloured by class.",
                    plots.plot_embeddings_pca(panels, f"{titles[sid]}, episode {ep}",
                                              fig_dir / f"embeddings_pca_{slug}")[0]))
    return out


def _paired_values(merged: Merged, sid: int, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    g = merged.rows[(merged.rows["setting_id"] == sid) & (merged.rows["status"] == "ok")]
    sa = g[g["label"] == a].set_index("episode")["accuracy"].astype(float)
    sb = g[g["label"] == b].set_index("episode")["accuracy"].astype(float)
    common = sa.index.intersection(sb.index).sort_values()
    return 100 * sa.loc[common].to_numpy(), 100 * sb.loc[common].to_numpy()


def _sweep_panels(merged: Merged, acc: pd.DataFrame) -> list:
    """[(hyperparameter name, [series (name, x, mean, ci)], [references (name, mean, ci)])]
    for each of lambda, tau, beta that varies between SCHaNe-like labels of one setting."""
    panels = []
    for hp in HYPERPARAMETERS:
        series, refs = [], []
        for sid in pd.unique(acc["setting_id"]):
            g = acc[acc["setting_id"] == sid]
            loss_rows = g[g["method"].isin(CONTRASTIVE)]
            others = [h for h in LOSS_FIELDS if h != hp]
            keyed: dict[tuple, list] = {}
            for r in loss_rows.itertuples():
                info = merged.label_info[r.label]
                k = (r.method,) + tuple(repr(info.get(h)) for h in others) + (_train_key(info),)
                keyed.setdefault(k, []).append((info.get(hp), r.mean, r.ci95, r.label))
            for k, pts in keyed.items():
                if len({p[0] for p in pts}) < 2:
                    continue
                pts.sort(key=lambda p: p[0])
                info = merged.label_info[pts[0][3]]
                fixed = [f"{FIELD_NAMES.get(h, h)}={_fmt_value(info.get(h))}"
                         for h in HYPERPARAMETERS if h != hp]
                name = f"{info['method']}, {merged.settings.loc[sid, 'title']} ({', '.join(fixed)})"
                series.append((name, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
                for r in g[g["method"] == "ce"].itertuples():
                    ref = (f"{r.label}, {merged.settings.loc[sid, 'title']}", r.mean, r.ci95)
                    if ref not in refs:
                        refs.append(ref)
        if series:
            panels.append((FIELD_NAMES.get(hp, hp), series, refs))
    return panels


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


@dataclass
class Report:
    out: Path
    merged: Merged
    accuracy: pd.DataFrame
    paired: pd.DataFrame
    embeddings: pd.DataFrame
    figures: list[Path]  # png and pdf files
    files: list[Path]  # everything written
    notes: list[str]
    text: str


_SCORE_DEFINITIONS = (
    "isotropy (eigen-entropy): exp(H) / min(n-1, D), H the entropy of the centred covariance's "
    "normalised eigenvalues (1: variance spread evenly; about 0: one direction). "
    "isotropy (partition ratio): min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c.x_i), c over the "
    "+-eigenvectors of X^T X (Mu & Viswanath 2018; uncentred; at least e^-2 = 0.135 for unit "
    "vectors). class separation: mean silhouette with cosine distance, in [-1, 1]. "
    "Each is computed per saved episode on its N*Q query embeddings and averaged over episodes "
    "(+- 95% CI)."
)


def build_report(run_dirs: Sequence[str | Path], out: str | Path, formats: Sequence[str] = FORMATS,
                 pairs: Sequence[tuple[str, str]] | None = None, title: str | None = None,
                 figures: bool = True) -> Report:
    """Load and merge `run_dirs`, tabulate, draw and write the report files into `out`."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise BenchError(f"Unknown --format {', '.join(unknown) or '(empty)'}; use a comma list of "
                         f"{', '.join(FORMATS)}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder.")
    runs = [load_run(p) for p in find_run_dirs(run_dirs)]
    merged = merge_runs(runs)
    acc = accuracy_table(merged)
    paired, pair_notes = paired_results(merged, pairs)
    emb, pca = embedding_table(merged)
    notes = merged.notes + pair_notes
    if any(r.embeddings for r in runs) and not all(r.embeddings for r in runs):
        missing = [r.name for r in runs if r.embeddings is None]
        notes.append(f"No embeddings.npz in {', '.join(missing)} (run with --embeddings N to "
                     "score embedding quality).")
    failed = int(acc["failed"].sum())
    if failed:
        notes.append(f"{failed} failed episode(s) are left out of the means (see the cells).")

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"Cannot create the report folder {out} ({exc.strerror}).") from exc
    main_t = main_table_view(merged, acc)
    paired_t = paired_table_view(merged, paired)
    emb_t = embedding_table_view(merged, emb) if len(emb) else None
    runs_t = runs_table_view(merged)
    title = title or _default_title(merged)

    figs: list[tuple[str, str, Path]] = []
    fig_files: list[Path] = []
    if figures:
        figs = _figures(merged, acc, paired, pca, out / "figures")
        fig_files = [p for _, _, png in figs for p in (png, png.with_suffix(".pdf"))]

    files: list[Path] = []

    def write(name: str, text: str) -> None:
        write_atomic(out / name, text)
        files.append(out / name)

    tables = {"main_table": main_t, "paired_table": paired_t}
    if emb_t is not None:
        tables["embedding_quality"] = emb_t
    if "md" in formats:
        for name, t in tables.items():
            write(f"{name}.md", t.markdown())
        write("report.md", _markdown_report(title, merged, tables, runs_t, figs, notes, out))
    if "csv" in formats:
        write("main_table.csv", acc.to_csv(index=False))
        write("paired_table.csv", paired.to_csv(index=False))
        if len(emb):
            write("embedding_quality.csv", emb.to_csv(index=False))
        ep = merged.rows.drop(columns=["loss_curve"]).merge(
            merged.settings[[k for k, _ in merged.shown]], left_on="setting_id", right_index=True)
        write("episodes.csv", ep.to_csv(index=False))
    if "latex" in formats:
        for name, t in tables.items():
            write(f"{name}.tex", t.latex())
    if "html" in formats:
        write("report.html", _html_report(title, merged, tables, runs_t, figs, notes))
    files += fig_files

    text = [title, "", main_t.text()]
    if paired_t.rows:
        text += [paired_t.text()]
    if emb_t is not None:
        text += [emb_t.text()]
    if any(main_t.bold):
        text += ["* best of its row, with a 95% interval that overlaps no other method's.", ""]
    text += [f"note: {n}" for n in notes]
    text += [f"Report in {out}: " + ", ".join(sorted({p.name for p in files if p.parent == out}))
             + (f"; {len(fig_files)} figure files in {out / 'figures'}" if fig_files else "")]
    return Report(out=out, merged=merged, accuracy=acc, paired=paired, embeddings=emb,
                  figures=fig_files, files=files, notes=notes, text="\n".join(text))


def _default_title(merged: Merged) -> str:
    n = len(merged.runs)
    return f"fewshot-bench report: {n} run{'s' if n != 1 else ''}, {len(merged.settings)} setting(s)"


_SECTIONS = (
    ("accuracy", "Accuracy", "main_table",
     "Mean accuracy (%) over episodes +- the 95% confidence interval t_{0.975,n-1} s / sqrt(n). "
     "**Bold**: the best method of its row whose interval overlaps no other method's."),
    ("paired", "Paired comparisons", "paired_table",
     "Per-episode differences b - a on the same episodes (percentage points): mean +- 95% CI, "
     "paired t-test and Wilcoxon signed-rank p-values, episodes won / tied / lost by b."),
    ("loss", "Fine-tuning loss", None, ""),
    ("hyper", "Hyperparameters", None, ""),
    ("embeddings", "Embedding quality", "embedding_quality", _SCORE_DEFINITIONS),
)


def _markdown_report(title, merged, tables, runs_t, figs, notes, out: Path) -> str:
    parts = [f"# {title}\n"]
    for key, heading, table, blurb in _SECTIONS:
        sec_figs = [(c, p) for k, c, p in figs if k == key]
        if (table is None or table not in tables or not tables[table].rows) and not sec_figs:
            continue
        parts.append(f"## {heading}\n")
        if blurb:
            parts.append(blurb + "\n")
        if table in tables and tables[table].rows:
            parts.append(tables[table].markdown())
        for caption, png in sec_figs:
            parts.append(f"![{caption}]({png.relative_to(out).as_posix()})\n\n*{caption}* "
                         f"([PDF]({png.with_suffix('.pdf').relative_to(out).as_posix()}))\n")
    parts.append("## Runs\n")
    parts.append(runs_t.markdown())
    if notes:
        parts.append("## Notes\n")
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #ddd}
th{background:#f4f4f4}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:14px;color:#555}
.note{color:#8a4b00}"""


def _html_report(title, merged, tables, runs_t, figs, notes) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"]
    for key, heading, table, blurb in _SECTIONS:
        sec_figs = [(c, p) for k, c, p in figs if k == key]
        if (table is None or table not in tables or not tables[table].rows) and not sec_figs:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>\n")
        if blurb:
            parts.append(f"<p>{html.escape(blurb.replace('**', ''))}</p>\n")
        if table in tables and tables[table].rows:
            parts.append(tables[table].html())
        for caption, png in sec_figs:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>\n")
    parts.append("<h2>Runs</h2>\n" + runs_t.html())
    if notes:
        parts.append("<h2>Notes</h2>\n<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes)
                     + "</ul>\n")
    parts.append("</body></html>\n")
    return "".join(parts)


def parse_formats(value: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in value.split(",") if f.strip())
    aliases = {"markdown": "md", "tex": "latex"}
    fmts = tuple(aliases.get(f, f) for f in fmts)
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise BenchError(f"Unknown --format {', '.join(unknown) or '(empty)'}; use a comma list of "
                         f"{', '.join(FORMATS)}.")
    return tuple(dict.fromkeys(fmts))

