"""`bench sweep`: run a grid of hyperparameters on one stored episode file, resumably, and
tabulate it; optionally choose the grid point on validation episodes first.

A sweep folder holds:

- `sweep.json`: the grid, the run settings and which run folder holds which grid point (a
  rerun of the same command resumes; another grid or other settings are refused);
- `runs/base/`: the methods that do not depend on the swept parameters (ProtoNet, and CE
  when only lambda, tau and beta are swept), run once; `runs/<name=value_...>/`: the
  methods that do, once per grid point. Every folder is an ordinary `bench run` folder on
  the same episode file, so `bench report` pairs them;
- `results.csv`, `results.md`: one row per grid point and method, mean accuracy with its
  95% CI and the paired difference against CE; `report/`: `report.build_report` over the
  run folders (its hyperparameter figure draws the lambda/tau/beta sweeps).

With `select_on="val"` the whole grid first runs on validation episodes (`val/`, the same
layout) and `select_point` picks the target method's best grid point there (recorded in
`selection.json`); only that point and the base methods then run on the evaluation split.
`select_point` receives only the validation configuration, so the choice cannot see test
episodes or test data.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from . import analysis
from .config import CONTRASTIVE, METHODS, RunConfig
from .episodes import make_episodes_dir
from .errors import BenchError
from .fileio import folder_entries, folder_lock, lock_new_folder, write_atomic
from .results import (RECORD, RESUME_FREE, check_output_dir, has_results, read_object,
                      read_record)

__all__ = ["PARAMS", "parse_params", "grid_points", "plan_sweep", "choose", "select_point",
           "run_sweep", "SweepPlan", "SweepResult"]

# --param name -> RunConfig field. The loss parameters change only the contrastive methods;
# the training parameters change every method that trains (all but ProtoNet).
PARAMS = {"lambda": "lam", "tau": "tau", "beta": "beta", "lr": "lr", "steps": "steps",
          "views": "views", "logit_scale": "logit_scale", "weight_decay": "weight_decay",
          "head_lr_factor": "head_lr_factor"}
LOSS_PARAMS = ("lambda", "tau", "beta")
INT_PARAMS = ("steps", "views")
_ALIASES = {"lam": "lambda", "learning_rate": "lr", "wd": "weight_decay"}
NO_TRAINING = ("protonet",)  # depends on no swept parameter (frozen embeddings, clean views)
SWEEP_RECORD = "sweep.json"
SELECTION_RECORD = "selection.json"
BASE = "base"

Grid = dict  # parameter name -> tuple of values, in the order given


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


def parse_params(specs: Sequence[str]) -> Grid:
    """`["lambda=0,0.5", "tau=0.1"]` -> `{"lambda": (0.0, 0.5), "tau": (0.1,)}`.

    BenchError for an unknown name, a value that is not a number (or not an integer for
    steps and views), an empty or repeated value, or a parameter given twice."""
    known = ", ".join(PARAMS)
    if not specs:
        raise BenchError(f"Give at least one --param NAME=V1,V2,... (NAME one of {known}).")
    grid: Grid = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        raw_name = name.strip()
        name = raw_name.lower().replace("-", "_")
        name = _ALIASES.get(name, name)
        if not eq or not raw_name:
            raise BenchError(f"--param {spec!r} is not NAME=V1,V2,...; "
                             "e.g. --param lambda=0,0.5,0.9.")
        if name not in PARAMS:
            raise BenchError(f"--param {spec!r}: unknown parameter {raw_name!r}. "
                             f"Sweepable: {known}.")
        if name in grid:
            raise BenchError(f"--param {name} is given twice; put all its values in one "
                             f"comma list, e.g. --param {name}=0.1,0.5.")
        texts = [t.strip() for t in values.split(",")]
        if not any(texts):
            raise BenchError(f"--param {spec!r} lists no values; e.g. --param {name}=0.1,0.5.")
        if not all(texts):
            raise BenchError(f"--param {spec!r} has an empty value (a stray comma).")
        parsed = [_parse_value(name, t, spec) for t in texts]
        repeated = sorted({_fmt(v) for v in parsed if parsed.count(v) > 1})
        if repeated:
            raise BenchError(f"--param {spec!r} lists {', '.join(repeated)} more than once.")
        grid[name] = tuple(parsed)
    return grid


def _parse_value(name: str, text: str, spec: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise BenchError(f"--param {spec!r}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise BenchError(f"--param {spec!r}: {text!r} is not a finite number.")
    if name in INT_PARAMS:
        if not value.is_integer():
            raise BenchError(f"--param {spec!r}: {name} takes whole numbers, not {text!r}.")
        return int(value)
    return value


def grid_points(grid: Grid) -> list[dict]:
    """Every combination, the first parameter varying slowest: [{name: value}]."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*grid.values())]


def depends_on(method: str, param: str) -> bool:
    """Whether `param` changes `method`'s results (lambda, tau and beta enter only the
    contrastive term; the training parameters change every method that trains)."""
    if param in LOSS_PARAMS:
        return method in CONTRASTIVE
    return method not in NO_TRAINING


def _fmt(v) -> str:
    if isinstance(v, float):
        short = f"{v:g}"
        return short if float(short) == v else repr(v)
    return str(v)


def point_name(point: dict) -> str:
    """Folder name of a grid point: `lambda=0.5_tau=0.1`."""
    return "_".join(f"{k}={_fmt(v)}" for k, v in point.items())


def describe(point: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in point.items())


@dataclass
class SweepPlan:
    """What a sweep runs: the base methods once, the grid methods per grid point."""

    cfg: RunConfig  # the run settings (the swept fields take each point's values)
    grid: Grid
    points: list[dict]
    base_methods: tuple[str, ...]
    grid_methods: tuple[str, ...]

    def base_config(self, runs_dir: Path) -> RunConfig | None:
        if not self.base_methods:
            return None
        return replace(self.cfg, methods=self.base_methods, out=str(runs_dir / BASE))

    def same_as(self, i: int) -> int:
        """The first grid point whose runs are exactly point i's. With lambda = 0 the
        contrastive term is off, so tau and beta change nothing; beta never enters SupCon.
        Such points share the first one's run folder instead of repeating it."""
        key = self._effective(i)
        return next(j for j in range(i + 1) if self._effective(j) == key)

    def _effective(self, i: int) -> tuple:
        point = dict(self.points[i])
        ignored = set()
        if point.get("lambda", self.cfg.lam) == 0:
            ignored |= {"tau", "beta"}
        if not {"schane", "schane-perpos", "schane-detached", "hcl"} & set(self.grid_methods):
            ignored.add("beta")  # only SupCon (or no contrastive method) is swept
        return tuple((k, v) for k, v in point.items() if k not in ignored)

    def point_config(self, i: int, runs_dir: Path) -> RunConfig:
        point = self.points[i]
        kw = {PARAMS[k]: v for k, v in point.items()}
        return replace(self.cfg, methods=self.grid_methods, out=str(runs_dir / point_name(point)),
                       **kw)


def plan_sweep(cfg: RunConfig, grid: Grid) -> SweepPlan:
    """Split the methods into base and grid methods and validate every grid point's run
    configuration (BenchError before any work)."""
    if not grid:
        raise BenchError("Give at least one --param NAME=V1,V2,... to sweep.")
    unknown = [k for k in grid if k not in PARAMS]
    if unknown:
        raise BenchError(f"Cannot sweep {', '.join(unknown)}; sweepable: {', '.join(PARAMS)}.")
    points = grid_points(grid)
    try:  # the flags and methods first, as at the first grid point
        replace(cfg, **{PARAMS[k]: v for k, v in points[0].items()}).validate()
    except BenchError as exc:
        raise BenchError(f"Grid point {describe(points[0])}: {exc}") from None
    grid_methods = tuple(m for m in cfg.methods if any(depends_on(m, p) for p in grid))
    base_methods = tuple(m for m in cfg.methods if m not in grid_methods)
    if not grid_methods:
        could = [m for m in METHODS if any(depends_on(m, p) for p in grid)]
        raise BenchError(f"No method in --methods ({', '.join(cfg.methods)}) depends on "
                         f"{', '.join(grid)}, so the sweep would repeat one result. Add one "
                         f"that does ({', '.join(could)}) to --methods.")
    plan = SweepPlan(cfg, dict(grid), points, base_methods, grid_methods)
    runs = Path(cfg.out or ".")
    for i, point in enumerate(plan.points):
        try:
            plan.point_config(i, runs).validate()
        except BenchError as exc:
            raise BenchError(f"Grid point {describe(point)}: {exc}") from None
    base = plan.base_config(runs)
    if base is not None:
        base.validate()
    return plan


# --------------------------------------------------------------------------------------
# Running one phase (the grid on one split) and tabulating it
# --------------------------------------------------------------------------------------


@dataclass
class _Folder:
    point: int | None  # index into plan.points; None: the base run
    values: dict
    cfg: RunConfig

    @property
    def path(self) -> Path:
        return Path(self.cfg.out)


def _folders(plan: SweepPlan, root: Path, points: Sequence[int]) -> list[_Folder]:
    runs = root / "runs"
    out = []
    base = plan.base_config(runs)
    if base is not None:
        out.append(_Folder(None, {}, base))
    # a point equivalent to an earlier one (see SweepPlan.same_as) gets that point's folder
    out += [_Folder(i, plan.points[i], plan.point_config(plan.same_as(i), runs)) for i in points]
    return out


def _check_folders(folders: Sequence[_Folder]) -> list[dict | None]:
    """Each folder's previous run record (None: new), refusing foreign or changed folders."""
    # validated copies: the per-mode defaults (None -> TUNE_DEFAULTS) are what run.json holds
    return [check_output_dir(replace(f.cfg).validate(), f.path) for f in folders]


def _run_phase(plan: SweepPlan, folders: Sequence[_Folder], root: Path, *, phase: str,
               progress: bool, echo: Callable[[str], None], figures: bool, title: str,
               before_write: Callable[[], None]) -> tuple[pd.DataFrame, object]:
    """Run (or keep) every folder, then write root/results.{csv,md} and root/report/;
    `before_write` is called before anything is written (see `runner.run`)."""
    from . import runner
    from .report import build_report

    cache: dict = {}  # one feature bank for every folder of this phase
    n = len(plan.points)
    seen: set[Path] = set()
    for f, previous in zip(folders, _check_folders(folders)):
        what = (f"base ({', '.join(f.cfg.methods)})" if f.point is None
                else f"point {f.point + 1}/{n}: {describe(f.values)}")
        if f.path in seen:
            echo(f"{phase}{what}: the same runs as point {plan.same_as(f.point) + 1} "
                 f"(lambda = 0 or SupCon ignores the rest), not repeated")
            continue
        seen.add(f.path)
        if previous is not None and "finished" in previous:
            echo(f"{phase}{what}: finished earlier, kept ({f.path})")
            continue
        echo(f"{phase}{what}" + (": resuming" if previous is not None else ""))
        runner.run(f.cfg, progress=progress, echo=lambda m: echo(f"  {m}"), engine_cache=cache,
                   before_write=before_write)
    before_write()
    table = results_table(plan, folders, root)
    write_atomic(root / "results.csv", table.to_csv(index=False))
    write_atomic(root / "results.md", f"# {title}\n\n" + results_markdown(plan, table) + "\n")
    report = build_report(list(dict.fromkeys(f.path for f in folders)), root / "report",
                          title=title, figures=figures)
    return table, report


def results_table(plan: SweepPlan, folders: Sequence[_Folder], root: Path) -> pd.DataFrame:
    """One row per (folder, method): point (1-based; "base"), the swept values, method, n,
    failed, mean, ci95, std, accuracy, the paired difference against CE on the same episodes
    (diff_vs_ce, diff_ci95, diff_t_p, diff_n; empty without CE) and the run folder."""
    from .report import load_run

    loaded = [(f, load_run(f.path)) for f in folders]
    base_run = next((r for f, r in loaded if f.point is None), None)
    out = []
    for f, run in loaded:
        ce_run = run if "ce" in f.cfg.methods else base_run
        ce_rows = None
        if ce_run is not None and "ce" in set(ce_run.rows["method"]) \
                and ce_run.content_hash == run.content_hash:  # same episodes: paired
            ce_rows = ce_run.rows[ce_run.rows["method"] == "ce"]
        for method in f.cfg.methods:
            rows = run.rows[run.rows["method"] == method]
            summary = analysis.method_summary(rows)
            s = (summary.iloc[0].to_dict() if len(summary) else
                 {"method": method, "n": 0, "failed": 0, "mean": math.nan, "ci95": math.nan,
                  "std": math.nan, "accuracy": "n/a"})
            diff = {"diff_vs_ce": math.nan, "diff_ci95": math.nan, "diff_t_p": math.nan,
                    "diff_n": math.nan}
            if ce_rows is not None and method != "ce" and len(rows):
                try:
                    p = analysis.paired_comparison(pd.concat([ce_rows, rows]), "ce", method)
                    diff = {"diff_vs_ce": p["mean_diff"], "diff_ci95": p["ci95"],
                            "diff_t_p": p["t_p"], "diff_n": p["n"]}
                except BenchError:  # no episode completed by both
                    pass
            out.append({"point": BASE if f.point is None else f.point + 1,
                        **{k: f.values.get(k, math.nan) for k in plan.grid},
                        **s, **diff, "run": f.path.relative_to(root).as_posix()})
    cols = (["point", *plan.grid, "method", "n", "failed", "mean", "ci95", "std", "accuracy",
             "diff_vs_ce", "diff_ci95", "diff_t_p", "diff_n", "run"])
    return pd.DataFrame(out, columns=cols)


def _table_cells(plan: SweepPlan, table: pd.DataFrame, chosen: int | None = None):
    headers = ["point", *plan.grid, "method", "episodes", "accuracy % (95% CI)",
               "diff vs CE, pts (95% CI)", "run"]
    rows = []
    for r in table.to_dict("records"):
        values = ["-" if r["point"] == BASE else _fmt(r[k]) for k in plan.grid]
        acc = r["accuracy"] + (f" ({r['failed']} failed)" if r["failed"] else "")
        diff = ("" if pd.isna(r["diff_vs_ce"])
                else analysis._fmt_acc(r["diff_vs_ce"], r["diff_ci95"], sign=True))
        mark = "*" if chosen is not None and r["point"] == chosen + 1 else ""
        rows.append([f"{r['point']}{mark}", *values, r["method"], str(r["n"]), acc, diff, r["run"]])
    return headers, rows, "l" + "r" * len(plan.grid) + "lrlll"


def results_markdown(plan: SweepPlan, table: pd.DataFrame, chosen: int | None = None) -> str:
    return analysis._md_table(*_table_cells(plan, table, chosen))


def results_text(plan: SweepPlan, table: pd.DataFrame, chosen: int | None = None) -> str:
    return analysis._text_table(*_table_cells(plan, table, chosen))


# --------------------------------------------------------------------------------------
# Selection on validation episodes
# --------------------------------------------------------------------------------------


def choose(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first in grid order; NaN never wins."""
    best = None
    for i, s in enumerate(scores):
        if s is not None and math.isfinite(s) and (best is None or s > scores[best]):
            best = i
    if best is None:
        raise BenchError("No grid point has a validation accuracy for the target method (every "
                         "episode failed); nothing to choose from.")
    return best


def select_point(val_cfg: RunConfig, grid: Grid, out: str | Path, target: str, *,
                 progress: bool = True, echo: Callable[[str], None] = print,
                 figures: bool = True, before_write: Callable[[], None] = lambda: None) -> dict:
    """Run the whole grid on `val_cfg`'s episodes and choose, for `target`, the grid point
    with the highest mean accuracy (ties: the first in grid order).

    Given only the validation configuration (its `split` must not be "test"), this cannot
    read test episodes or test data. Writes `out/runs/...`, `out/results.{csv,md}` and
    `out/report/`; returns the selection record (grid, every point's score, the choice).
    `before_write` is called before anything is written (see `runner.run`)."""
    if val_cfg.split == "test":
        raise ValueError("select_point chooses on validation episodes; it was given split 'test'")
    out = Path(out)
    plan = plan_sweep(replace(val_cfg, out=str(out)), grid)
    if target not in plan.grid_methods:
        raise BenchError(_target_message(plan, target))
    folders = _folders(plan, out, range(len(plan.points)))
    title = _title(val_cfg, plan, prefix="bench sweep (selection)")
    table, _ = _run_phase(plan, folders, out, phase=f"{val_cfg.split} ", progress=progress,
                          echo=echo, figures=figures, title=title, before_write=before_write)
    t = table[(table["point"] != BASE) & (table["method"] == target)]
    scores = [float(x) for x in t["mean"]]
    best = choose(scores)
    row = t.iloc[best]
    write_atomic(out / "results.md", f"# {title}\n\n" + results_markdown(plan, table, best)
                 + f"\n\n\\* chosen: the highest mean {val_cfg.split} accuracy of {target} "
                 "(ties: the first grid point).\n")
    record = read_record(folders[-1].path / RECORD)
    return {
        "split": val_cfg.split, "target": target,
        "rule": f"highest mean {val_cfg.split} accuracy of {target}; ties: the first grid point",
        "grid": {k: list(v) for k, v in plan.grid.items()},
        "episodes": record.get("episodes", {}),
        "scores": [{"point": i + 1, "values": plan.points[i], "mean": scores[i],
                    "ci95": float(t.iloc[i]["ci95"]), "n": int(t.iloc[i]["n"]),
                    "failed": int(t.iloc[i]["failed"])} for i in range(len(scores))],
        "chosen": {"point": best + 1, "values": plan.points[best], "mean": float(row["mean"]),
                   "ci95": float(row["ci95"]), "accuracy": row["accuracy"]},
    }


def _target_message(plan: SweepPlan, target: str) -> str:
    if target in plan.base_methods:
        return (f"--target {target} does not depend on {', '.join(plan.grid)}, so every grid "
                f"point would score the same. Choose one of {', '.join(plan.grid_methods)}.")
    return (f"--target {target} is not among the methods the grid runs "
            f"({', '.join(plan.grid_methods)}); pass --target with one of them, or add it to "
            "--methods.")


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    out: Path
    plan: SweepPlan
    table: pd.DataFrame  # results on the evaluation split (with selection: the chosen point)
    selection: dict | None
    report: object  # report.Report over the evaluation runs
    text: str


def _title(cfg: RunConfig, plan: SweepPlan, prefix: str = "bench sweep") -> str:
    sizes = " x ".join(f"{k} ({len(v)})" for k, v in plan.grid.items())
    return (f"{prefix}: {cfg.dataset}/{cfg.split}, {cfg.backbone}, {cfg.ways}-way "
            f"{cfg.shots}-shot, {cfg.episodes} episodes; grid {sizes}")


def _sweep_record(cfg: RunConfig, plan: SweepPlan, select_on: str | None, target: str | None,
                  phases: dict[str, list[_Folder]], out: Path) -> dict:
    return {
        "grid": [[k, list(v)] for k, v in plan.grid.items()],
        "config": cfg.to_dict(),
        "select_on": select_on, "target": target,
        "base_methods": list(plan.base_methods), "grid_methods": list(plan.grid_methods),
        "folders": {phase: [{"point": None if f.point is None else f.point + 1,
                             "values": f.values, "methods": list(f.cfg.methods),
                             "dir": f.path.relative_to(out).as_posix()} for f in folders]
                    for phase, folders in phases.items()},
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _check_sweep_dir(out: Path, record: dict) -> dict | None:
    """The previous sweep record when `out` holds the same sweep; BenchError when it holds
    another sweep or something else; None for a new or empty folder, or a sweep that
    stopped before its first result (replaced, whatever its grid and settings)."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder. Pass a new or empty folder.")
    if not out.is_dir() or not folder_entries(out):
        return None
    path = out / SWEEP_RECORD
    if not path.is_file():
        raise BenchError(f"The folder {out} already holds files but no {SWEEP_RECORD}, so it is "
                         "not a sweep to resume. Choose another --out.")
    previous = read_object(path, {"config": dict}, required=("config",),
                           fix="Restore it, or choose another --out for a new sweep.")
    before_cfg = previous["config"]
    changes = []
    for key, flag in (("grid", "--param"), ("select_on", "--select-on"), ("target", "--target")):
        if json.dumps(previous.get(key)) != json.dumps(record[key]):
            changes.append(f"{flag}: {_show(key, previous.get(key))} then, "
                           f"{_show(key, record[key])} now")
    now_cfg = record["config"]
    changes += [f"{k}: {before_cfg.get(k)!r} then, {now_cfg[k]!r} now" for k in now_cfg
                if k not in RESUME_FREE and json.dumps(before_cfg.get(k)) != json.dumps(now_cfg[k])]
    if changes and not has_results(out):
        return None  # a failed attempt: nothing to keep
    if changes:
        raise BenchError(f"Cannot resume the sweep in {out}: it was started with another grid "
                         f"or other settings ({'; '.join(changes)}). Rerun the original command "
                         "to resume it, or choose another --out for a new sweep.")
    return previous


def _show(key: str, value) -> str:
    if key == "grid" and isinstance(value, list):
        return " ".join(f"{k}={','.join(_fmt(x) for x in v)}" for k, v in value)
    return repr(value)


def run_sweep(cfg: RunConfig, grid: Grid, out: str | Path, *, select_on: str | None = None,
              target: str = "schane", progress: bool = True,
              echo: Callable[[str], None] = print, figures: bool = True) -> SweepResult:
    """Run `grid` (see `parse_params`) over the settings `cfg` into the sweep folder `out`
    (layout in the module docstring); rerunning with the same arguments resumes.

    `select_on="val"`: choose the grid point on validation episodes first (`select_point`),
    then run only that point and the base methods on `cfg.split`."""
    with contextlib.ExitStack() as held:  # the sweep folder's lock, once taken
        return _run_sweep(cfg, grid, out, select_on, target, progress, echo, figures, held)


def _run_sweep(cfg: RunConfig, grid: Grid, out: str | Path, select_on: str | None, target: str,
               progress: bool, echo: Callable[[str], None], figures: bool,
               held: contextlib.ExitStack) -> SweepResult:
    from . import distributed

    if distributed.launched():
        raise BenchError("bench sweep runs in one process, not under torchrun: its grid points "
                         "share one feature bank. Run it without torchrun, or run the points "
                         "as separate `bench run`s under torchrun and merge them with "
                         "`bench report`.")
    out = Path(out)
    cfg = replace(cfg, out=str(out))
    if select_on not in (None, "val"):
        raise BenchError(f"Unknown --select-on {select_on!r}; the only choice is val.")
    plan = plan_sweep(cfg, grid)
    val_cfg = val_plan = None
    phases: dict[str, list[_Folder]] = {}
    if select_on:
        if cfg.split == select_on:
            raise BenchError(f"--select-on {select_on} chooses on {select_on} episodes and then "
                             f"evaluates on --split, which is {cfg.split} too. Pass --split test.")
        if target not in plan.grid_methods:
            raise BenchError(_target_message(plan, target))
        val_cfg = replace(cfg, split=select_on, out=str(out / select_on))
        val_plan = plan_sweep(val_cfg, grid)
        phases[select_on] = _folders(val_plan, out / select_on, range(len(plan.points)))
        phases[cfg.split] = _folders(plan, out, [])  # + the chosen point, once known
    else:
        phases[cfg.split] = _folders(plan, out, range(len(plan.points)))
    record = _sweep_record(cfg, plan, select_on, target if select_on else None, phases, out)
    previous = _check_sweep_dir(out, record)
    if previous is not None:  # a sweep to resume: keep others out, then read it afresh
        held.enter_context(folder_lock(out))
        previous = _check_sweep_dir(out, record)
    _check_folders(phases.get(select_on, []))
    _check_folders(_folders(plan, out, range(len(plan.points))))  # any point may be chosen
    # the runs would fail on an unusable --episodes-dir only after sweep.json is written
    if cfg.episodes_dir is not None:  # None: chosen per episode file (default_episodes_dir)
        make_episodes_dir(cfg.episodes_dir)
    started = False

    def start() -> None:
        """Write sweep.json: once the first run has checked its inputs (data set, ways and
        shots, backbone, device), so a refused sweep leaves no folder behind."""
        nonlocal started
        if started:
            return
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"Cannot create the sweep folder {out} ({exc.strerror or exc}). "
                             "Pass a writable --out.") from None
        if previous is None:  # a new sweep: lock its folder; nobody may have begun one since
            lock_new_folder(held, out, lambda: _check_sweep_dir(out, record) is not None,
                            "a sweep")
        else:
            record["started"] = previous.get("started", record["started"])
        write_atomic(out / SWEEP_RECORD, json.dumps(record, indent=2) + "\n")
        started = True

    echo(f"sweep of {len(plan.points)} grid point(s) x {', '.join(plan.grid_methods)}"
         + (f" (+ {', '.join(plan.base_methods)} once)" if plan.base_methods else "")
         + (f", chosen on {select_on}" if select_on else "") + f"; results in {out}")

    selection, chosen = None, None
    if select_on:
        selection = select_point(val_cfg, grid, out / select_on, target, progress=progress,
                                 echo=echo, figures=figures, before_write=start)
        write_atomic(out / SELECTION_RECORD, json.dumps(selection, indent=2) + "\n")
        chosen = selection["chosen"]["point"] - 1
        c = selection["chosen"]
        echo(f"chosen on {select_on}: {describe(c['values'])} ({target} {c['accuracy']} % on "
             f"{select_on}); now on {cfg.split}")
        folders = phases[cfg.split] = _folders(plan, out, [chosen])
        record["folders"] = _sweep_record(cfg, plan, select_on, target, phases, out)["folders"]
        write_atomic(out / SWEEP_RECORD, json.dumps(record, indent=2) + "\n")
    else:
        folders = phases[cfg.split]
    title = _title(cfg, plan)
    if selection:
        title += f"; chosen on {select_on}: {describe(selection['chosen']['values'])}"
    table, report = _run_phase(plan, folders, out, phase="", progress=progress, echo=echo,
                               figures=figures, title=title, before_write=start)
    lines = [title, "", results_text(plan, table, chosen), ""]
    if selection:
        c = selection["chosen"]
        lines += [f"Chosen on {select_on} (highest mean {target} accuracy, first on ties): "
                  f"{describe(c['values'])}, {select_on} accuracy {c['accuracy']} %; "
                  f"all {select_on} scores in {out / select_on / 'results.md'}.", ""]
    lines.append(f"Results in {out}: results.csv, results.md, {SWEEP_RECORD}"
                 + (f", {SELECTION_RECORD}" if selection else "") + "; report in "
                 + str(out / "report"))
    return SweepResult(out, plan, table, selection, report, "\n".join(lines))


def config_options(options: dict) -> dict:
    """The entries of `options` (e.g. a click command's keyword arguments) that are
    RunConfig fields."""
    names = {f.name for f in fields(RunConfig)}
    return {k: v for k, v in options.items() if k in names}
