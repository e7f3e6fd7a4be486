"""Accuracy regression gate: store a run as a baseline, test a later run against it.

`create_baseline(run_dir, out)` writes a JSON file with the run's configuration, the
episode file's content hash, the data fingerprint, and per method the mean, std, n and
every per-episode accuracy. `check_run(run_dir, baseline_file)` compares a run with it,
method by method, with a one-sided test (H1: the method got worse):

- same episode file (equal content hash): the paired per-episode differences now - base,
  `scipy.stats.ttest_rel(now, base, alternative='less')` on the episodes both completed;
- otherwise: Welch's unpaired test, `scipy.stats.ttest_ind(now, base, equal_var=False,
  alternative='less')`.

A method FAILS only when the drop is significant (p < alpha) AND larger than `min_drop`
percentage points, so a gate on a few hundred episodes neither flaps on noise nor fails on
a significant but negligible change. "improved?" marks a significant gain larger than
`min_drop` (time to store a new baseline). Failed episodes (NaN losses) are left out of
the tests and counted; a method with no completed episode at all FAILS.

The protocol must match for the comparison to mean anything: data set, split, ways,
shots and queries (`MUST_MATCH`), and every baseline method must be in the run; anything
else (backbone, weights, learning rate, steps, episodes, data fingerprint, ...) may differ,
since a changed model or pipeline is what the gate is for, and is reported as a changed
setting. Unusable input raises BenchError (the CLI exits 2).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import analysis
from .errors import BenchError
from .fileio import write_atomic

__all__ = ["FORMAT", "MUST_MATCH", "create_baseline", "load_baseline", "check_run",
           "BaselineResult", "CheckResult"]

FORMAT = "fewshot-bench-baseline/1"
# The protocol: a run that differs here measures something else, and is refused.
MUST_MATCH = ("dataset", "split", "ways", "shots", "queries", "grouped")
# Where things are and what extra is saved: never results, never reported.
IGNORED = {"data_root", "episodes_dir", "out", "episode_batch", "compile", "embeddings",
           "fail_fast", "methods"}
# Rounding differences restores exact ties broken by float subtraction (as in analysis).
_DECIMALS = 12


# --------------------------------------------------------------------------------------
# Reading runs and baselines
# --------------------------------------------------------------------------------------


def _load_run(run_dir: str | Path):
    from .report import load_run  # the run-folder reader `bench report` uses

    path = Path(run_dir)
    if not path.is_dir():
        raise BenchError(f"The run folder {path} does not exist or is not a folder. Pass a "
                         "folder written by `bench run` (it holds run.json and episodes.jsonl).")
    run = load_run(path)
    if not run.finished:
        raise BenchError(f"The run in {path} did not finish (run.json has no 'finished' time), "
                         "so its results are partial. Run the same `bench run` command again "
                         "to complete it, then retry.")
    return run


def _setting(record: dict) -> dict:
    """Everything about a run that can change its results, flat: the configuration plus
    what run.json resolved (weight file hash, image size, device, data fingerprint)."""
    cfg = dict(record.get("config") or {})
    backbone = record.get("backbone") or {}
    weights = backbone.get("weights")
    episodes = record.get("episodes") or {}
    device = (record.get("hardware") or {}).get("device") or cfg.get("device")
    out = {k: v for k, v in cfg.items() if k not in IGNORED}
    out.update({
        "weights_sha256": weights.get("sha256") if isinstance(weights, dict) else None,
        "weights_source": weights.get("source") if isinstance(weights, dict) else weights,
        "image_size": (record.get("data") or {}).get("image_size") or cfg.get("image_size"),
        "device": str(device).split(":")[0] if device else None,
        "data_fingerprint": episodes.get("data_fingerprint"),
        "episodes_hash": episodes.get("content_hash"),
        # group-aware episodes hold no near-copies of support images among the queries:
        # leaky ones score higher, so the two are not the same protocol
        "grouped": bool(episodes.get("grouped", False)),
    })
    return out


def _method_stats(ok: pd.DataFrame, failed: pd.Series, method: str) -> dict:
    sel = ok.loc[ok["method"] == method].sort_values("episode")
    acc = sel["accuracy"].to_numpy(dtype=float)
    mean, half = analysis.mean_ci(acc)
    return {
        "n": int(acc.size),
        "failed": int(failed.get(method, 0)),
        "mean": 100 * mean,
        "std": 100 * float(np.std(acc, ddof=1)) if acc.size > 1 else math.nan,
        "ci95": 100 * half,
        "episodes": [int(e) for e in sel["episode"]],
        "accuracy": [float(a) for a in acc],
    }


def _json_safe(obj):
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


@dataclass
class BaselineResult:
    path: Path
    baseline: dict
    text: str


def create_baseline(run_dir: str | Path, out: str | Path) -> BaselineResult:
    """Store the finished run in `run_dir` as a baseline JSON file `out` (atomically)."""
    run = _load_run(run_dir)
    ok, failed = analysis.split_failed(run.rows)
    methods = [str(m) for m in pd.unique(run.rows["method"])]
    empty = [m for m in methods if not (ok["method"] == m).any()]
    if empty:  # a baseline needs accuracies to compare with (load_baseline refuses none)
        raise BenchError(f"Every episode of {', '.join(empty)} failed in the run {run.path}, so "
                         "there is no accuracy to store as a baseline. Store a run whose "
                         "methods completed episodes.")
    record = run.record
    baseline = {
        "format": FORMAT,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "source_run": str(run.path),
        "config": record.get("config"),
        "episodes": record.get("episodes"),
        "setting": _setting(record),
        "backbone": {k: record.get("backbone", {}).get(k) for k in ("name", "weights", "tune")},
        "git": record.get("git"),
        "versions": record.get("versions"),
        "hardware": record.get("hardware"),
        "methods": {m: _method_stats(ok, failed, m) for m in methods},
    }
    out = Path(out)
    _check_out(out, run.path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(_json_safe(baseline), indent=1) + "\n")
    except OSError as exc:
        raise BenchError(f"Cannot write the baseline {out} ({exc.strerror or exc}). Pass a "
                         "writable path with --out.") from exc
    lines = [f"baseline {out} from {run.path} ({run.content_hash[:12]} episodes):"]
    for m, s in baseline["methods"].items():
        std = "n/a" if math.isnan(s["std"]) else f"{s['std']:.2f}"
        lines.append(f"  {m:<10} n={s['n']:<5} mean {s['mean']:.2f} %  std {std}"
                     + (f"  ({s['failed']} failed)" if s["failed"] else ""))
    return BaselineResult(out, baseline, "\n".join(lines))


def _check_out(out: Path, run_dir: Path) -> None:
    """Refuse an --out that would replace the run's own files or a file that is not an
    earlier baseline (only those are overwritten)."""
    if out.is_dir():
        raise BenchError(f"--out {out} is a folder; pass a file name such as {out / 'NAME.json'}.")
    run = run_dir.resolve()
    if run == out.resolve() or run in out.resolve().parents:
        raise BenchError(f"--out {out} lies inside the run folder {run_dir}, whose files it "
                         "could replace. Pass a path outside it, e.g. "
                         "results/baselines/NAME.json.")
    if out.exists():
        try:
            data = json.loads(out.read_bytes())
            ours = isinstance(data, dict) and data.get("format") == FORMAT
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise BenchError(f"--out {out} exists and is not a baseline file written by `bench "
                             "baseline`, so it is not overwritten. Pass another path, or delete "
                             "the file first.")


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"The baseline file {path} does not exist. Create one with "
                         "`bench baseline RUN_DIR --out FILE`.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchError(f"Cannot read the baseline file {path} ({exc}). Recreate it with "
                         "`bench baseline RUN_DIR --out FILE`.") from exc
    ok = isinstance(data, dict) and data.get("format") == FORMAT
    methods = data.get("methods") if ok else None
    if not ok or not isinstance(methods, dict) or not methods or not isinstance(data.get("setting"), dict):
        raise BenchError(f"{path} is not a `bench baseline` file (format {FORMAT}). Recreate it "
                         "with `bench baseline RUN_DIR --out FILE`.")
    config = data.get("config")
    n = config.get("episodes") if isinstance(config, dict) else None
    for m, s in methods.items():
        problem = _stats_problem(s, n if isinstance(n, int) else None)
        if problem:
            raise BenchError(f"The baseline file {path} is damaged: method {m!r} {problem}. "
                             "Recreate it with `bench baseline RUN_DIR --out FILE`.")
        s["episodes"], s["accuracy"] = [int(e) for e in s["episodes"]], [float(a) for a in s["accuracy"]]
    return data


def _stats_problem(s, episodes: int | None) -> str | None:
    """What is wrong with one method's entry of a baseline file, or None: it needs
    per-episode ids and accuracies, each pair a valid result row, no episode twice."""
    eps = s.get("episodes") if isinstance(s, dict) else None
    acc = s.get("accuracy") if isinstance(s, dict) else None
    if not isinstance(eps, list) or not isinstance(acc, list) or not eps:
        return "has no per-episode accuracies"
    if len(eps) != len(acc):
        return f"has {len(eps)} episode ids but {len(acc)} accuracies"
    for e, a in zip(eps, acc):
        problem = analysis.row_problem({"episode": e, "method": "", "accuracy": a}, episodes)
        if problem:
            return f"has a bad result: {problem}"
    if len(set(eps)) != len(eps):
        return "lists an episode twice"
    return None


# --------------------------------------------------------------------------------------
# Comparing
# --------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    run_dir: Path
    baseline_file: Path
    paired: bool
    alpha: float
    min_drop: float
    changed: dict  # setting -> (baseline value, current value)
    methods: pd.DataFrame  # one row per method, see check_run
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.methods["verdict"] == "FAIL").any()

    @property
    def failed_methods(self) -> list[str]:
        return list(self.methods.loc[self.methods["verdict"] == "FAIL", "method"])

    def to_dict(self) -> dict:
        return _json_safe({
            "passed": self.passed,
            "run": str(self.run_dir),
            "baseline": str(self.baseline_file),
            "test": "paired t-test" if self.paired else "Welch t-test",
            "paired": self.paired,
            "alternative": "less (now worse than baseline)",
            "alpha": self.alpha,
            "min_drop": self.min_drop,
            "changed_settings": {k: {"baseline": a, "now": b} for k, (a, b) in self.changed.items()},
            "methods": self.methods.to_dict(orient="records"),
            "failed_methods": self.failed_methods,
            "notes": self.notes,
        })

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def text(self) -> str:
        test = ("paired t-test on the episodes both completed (same episode file)" if self.paired
                else "Welch's unpaired t-test (different episode files)")
        lines = [f"bench check {self.run_dir} against {self.baseline_file}",
                 f"{test}; one-sided, H1: now < baseline; FAIL when p < {self.alpha:g} and the "
                 f"drop > {_pts(self.min_drop)}"]
        if self.changed:
            lines.append("changed settings: " + "; ".join(
                f"{k} {_short(a)} -> {_short(b)}" for k, (a, b) in self.changed.items()))
        else:
            lines.append("changed settings: none")
        headers = ["method", "n", "baseline %", "now %", "diff pts (95% CI)", "p", "verdict"]
        rows = []
        for r in self.methods.itertuples(index=False):
            n = str(r.n_paired) if self.paired else f"{r.n_base}/{r.n_now}"
            if r.failed_now:
                n += f" ({r.failed_now} failed)"
            rows.append([r.method, n, _num(r.baseline), _num(r.now),
                         analysis._fmt_acc(r.diff, r.ci95, sign=True), analysis._fmt_p(r.p),
                         r.verdict])
        table = analysis._text_table(headers, rows, "lrrrlrl")
        if self.passed:
            verdict = f"PASS: no method dropped significantly by more than {_pts(self.min_drop)}."
        else:
            verdict = (f"FAIL: {', '.join(self.failed_methods)} dropped significantly (p < "
                       f"{self.alpha:g}) by more than {_pts(self.min_drop)}.")
        return "\n".join(lines) + "\n\n" + table + "\n\n" + "\n".join([*self.notes, verdict])


def _pts(x: float) -> str:
    return f"{x:g} point" + ("" if x == 1 else "s")


def _num(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"


def _short(v) -> str:
    s = "default" if v is None else str(v)
    return s[:12] if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


def _one_sided(now: np.ndarray, base: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """(t statistic, p for H1 now < base, p for H1 now > base). Identical samples -> p 1."""
    if paired:
        d = np.round(now - base, _DECIMALS)
        if not d.any():
            return 0.0, 1.0, 1.0
    elif now.size and base.size and np.array_equal(np.sort(now), np.sort(base)):
        return 0.0, 1.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n < 2 or no spread: nan / inf
        if paired:
            lo = stats.ttest_rel(now, base, alternative="less")
            hi = stats.ttest_rel(now, base, alternative="greater")
        else:
            lo = stats.ttest_ind(now, base, equal_var=False, alternative="less")
            hi = stats.ttest_ind(now, base, equal_var=False, alternative="greater")
    return float(lo.statistic), float(lo.pvalue), float(hi.pvalue)


def _welch_ci(now: np.ndarray, base: np.ndarray, confidence: float) -> float:
    """Half width of the two-sided Welch CI of mean(now) - mean(base), as a fraction."""
    if now.size < 2 or base.size < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_ind(now, base, equal_var=False).confidence_interval(confidence)
    half = (float(ci.high) - float(ci.low)) / 2
    return half if math.isfinite(half) else math.nan


def _check_protocol(base_setting: dict, now_setting: dict, base_file: Path, run_dir: Path) -> dict:
    wrong = [k for k in MUST_MATCH if base_setting.get(k) != now_setting.get(k)]
    if wrong:
        what = "; ".join(f"{k}: {base_setting.get(k)!r} in the baseline, {now_setting.get(k)!r} "
                         "in the run" for k in wrong)
        raise BenchError(f"The run {run_dir} does not follow the baseline's protocol ({what}), so "
                         f"the accuracies are not comparable. Run with the baseline's settings "
                         f"(see 'config' in {base_file}) or store a new baseline with `bench "
                         "baseline`.")
    keys = [k for k in {**base_setting, **now_setting} if k not in MUST_MATCH]
    changed = {k: (base_setting.get(k), now_setting.get(k)) for k in keys
               if base_setting.get(k) != now_setting.get(k)}
    if "weights" in changed:
        changed.pop("weights_source", None)  # the --weights path already says it
    return changed


def _verify_episode_file(record: dict, run_dir: Path) -> list[str]:
    """Hash the episode file `record` (run.json) names and compare it with the content hash
    run.json records: BenchError when they differ or the file is damaged; a note when the
    file is not here (the pairing then rests on run.json alone)."""
    from .episodes import load_episodes

    episodes = record.get("episodes") or {}
    file, recorded = episodes.get("file"), episodes.get("content_hash")
    if not file or not Path(file).is_file():
        return [f"episode file {file} not found here: the pairing rests on the content hash "
                f"in {run_dir / 'run.json'}."]
    try:
        actual = load_episodes(file).content_hash
    except BenchError as exc:
        raise BenchError(f"bench check pairs the run {run_dir} with the baseline on its "
                         f"episode file, which is damaged: {exc}") from None
    if actual != recorded:
        raise BenchError(f"The episode file {file} of the run {run_dir} hashes to "
                         f"{actual[:12]}..., but its run.json records {str(recorded)[:12]}...: "
                         "the file or run.json changed after the run, so the pairing with the "
                         "baseline cannot be trusted. Restore the episode file the run used "
                         "(or rerun the run on the current one), then check again.")
    return []


def check_run(run_dir: str | Path, baseline_file: str | Path, alpha: float = 0.01,
              min_drop: float = 1.0, confidence: float = 0.95) -> CheckResult:
    """Test every baseline method of the run in `run_dir` for a drop against the baseline.

    The returned table has one row per method: method, test, n_base, n_now, n_paired,
    failed_now, baseline and now (mean accuracy %, on the paired episodes when paired),
    diff (now - baseline, points), ci95 (half width, points), t_stat, p (one-sided, H1:
    now < baseline), p_gain (H1: now > baseline), drop (baseline - now, points), verdict
    ('pass', 'FAIL' or 'improved?').
    """
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"--alpha must lie strictly between 0 and 1 (got {alpha}); 0.01 is the default.")
    if not (min_drop >= 0.0 and math.isfinite(min_drop)):
        raise BenchError(f"--min-drop must be a number >= 0 of percentage points (got {min_drop}).")
    baseline_file = Path(baseline_file)
    base = load_baseline(baseline_file)
    run = _load_run(run_dir)
    base_setting, now_setting = base["setting"], _setting(run.record)
    changed = _check_protocol(base_setting, now_setting, baseline_file, run.path)
    ok, failed = analysis.split_failed(run.rows)
    run_methods = [str(m) for m in pd.unique(run.rows["method"])]
    missing = [m for m in base["methods"] if m not in run_methods]
    if missing:
        raise BenchError(f"The baseline scores method(s) {', '.join(missing)}, but the run "
                         f"{run.path} has no results for them (it has {', '.join(run_methods)}). "
                         f"Run with --methods {','.join(base['methods'])}.")
    paired = bool(base_setting.get("episodes_hash")) and \
        base_setting.get("episodes_hash") == now_setting.get("episodes_hash")
    notes = []
    if paired:  # the pairing stands on the episode file: hash it, do not trust run.json
        notes += _verify_episode_file(run.record, run.path)
    extra = [m for m in run_methods if m not in base["methods"]]
    if extra:
        notes.append(f"not in the baseline, not checked: {', '.join(extra)}.")
    rows = []
    for m, s in base["methods"].items():
        b = pd.Series(s["accuracy"], index=s["episodes"], dtype=float)
        sel = ok.loc[ok["method"] == m]
        now = pd.Series(sel["accuracy"].to_numpy(dtype=float), index=sel["episode"].astype(int))
        row = {"method": m, "test": "paired" if paired else "welch", "n_base": int(b.size),
               "n_now": int(now.size), "failed_now": int(failed.get(m, 0))}
        if paired:
            ran = run.rows.loc[run.rows["method"] == m, "episode"].astype(int)
            if not b.index.isin(ran).any():  # the same episode file: ids must be shared
                raise BenchError(
                    f"The baseline file {baseline_file} is damaged: its episodes of {m!r} "
                    f"match none of the run's, although both used the same episode file. "
                    "Recreate it with `bench baseline RUN_DIR --out FILE`.")
            common = b.index.intersection(now.index).sort_values()
            xb, xn = b.loc[common].to_numpy(), now.loc[common].to_numpy()
            frame = pd.DataFrame({"episode": np.concatenate([common, common]),
                                  "method": ["baseline"] * len(common) + ["now"] * len(common),
                                  "accuracy": np.concatenate([xb, xn])})
            if len(common):
                pc = analysis.paired_comparison(frame, "baseline", "now", confidence)
                diff, half = pc["mean_diff"], pc["ci95"]
            else:
                diff = half = math.nan
            row["n_paired"] = int(len(common))
        else:
            xb, xn = b.to_numpy(), now.to_numpy()
            diff = 100 * (xn.mean() - xb.mean()) if xn.size and xb.size else math.nan
            half = 100 * _welch_ci(xn, xb, confidence)
            row["n_paired"] = 0
        t, p, p_gain = _one_sided(xn, xb, paired) if xn.size and xb.size else (math.nan,) * 3
        drop = 0.0 - diff  # no "-0.0" in the output
        if xn.size == 0:
            verdict = "FAIL"  # every episode failed (or none ran): as bad as it gets
            notes.append(f"{m}: no completed episode in the run ({row['failed_now']} failed).")
        elif p < alpha and drop > min_drop:
            verdict = "FAIL"
        elif p_gain < alpha and -drop > min_drop:
            verdict = "improved?"
        else:
            verdict = "pass"
        row.update(baseline=100 * xb.mean() if xb.size else math.nan,
                   now=100 * xn.mean() if xn.size else math.nan, diff=diff, ci95=half,
                   t_stat=t, p=p, p_gain=p_gain, drop=drop, verdict=verdict)
        rows.append(row)
        if paired and row["n_paired"] < min(row["n_base"], row["n_now"] + row["failed_now"]):
            notes.append(f"{m}: {row['n_paired']} episodes shared by baseline and run "
                         f"(baseline {row['n_base']}, run {row['n_now']}).")
        if row["failed_now"]:
            notes.append(f"{m}: {row['failed_now']} failed episode(s) in the run left out of the test.")
    if any(r["verdict"] == "improved?" for r in rows):
        notes.append("improved?: significantly better than the baseline; if intended, store a "
                     "new baseline with `bench baseline`.")
    cols = ["method", "test", "n_base", "n_now", "n_paired", "failed_now", "baseline", "now",
            "diff", "ci95", "t_stat", "p", "p_gain", "drop", "verdict"]
    return CheckResult(run_dir=run.path, baseline_file=baseline_file, paired=paired, alpha=alpha,
                       min_drop=min_drop, changed=changed, methods=pd.DataFrame(rows, columns=cols),
                       notes=notes)
