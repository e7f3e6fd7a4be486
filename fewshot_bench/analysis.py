"""Per-episode results -> mean accuracy with 95% CI, and paired method comparisons.

Every method is scored on the same stored episodes, so two methods are compared on their
per-episode differences (paired t-test, Wilcoxon signed-rank, win/tie/loss), which is far
more sensitive than comparing two overlapping confidence intervals. The statistics are
scipy's; this module only selects rows, pairs episodes and formats.

Input: a DataFrame with one row per (method, episode) and at least the columns
`episode` (int), `method` (str) and `accuracy` (float in [0, 1]); an optional `status`
column ('ok' or 'failed') marks episodes whose run failed, which are left out and counted.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .errors import BenchError

__all__ = [
    "mean_ci",
    "row_problem",
    "split_failed",
    "method_summary",
    "paired_comparison",
    "paired_table",
    "format_summary",
    "summary_markdown",
]

REQUIRED_COLUMNS = ("episode", "method", "accuracy")
STATUSES = ("ok", "failed")
# Accuracies are fractions k/(N*Q); rounding differences to this many decimals restores
# the exact ties that float subtraction can break (0.6-0.5333 vs 0.8-0.7333).
_DIFF_DECIMALS = 12


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half width of the two-sided `confidence` CI): ``t_{(1+c)/2, n-1} * s / sqrt(n)``.

    s uses ddof=1. One value has no spread estimate, so its half width is nan; no values
    give (nan, nan).
    """
    x = np.asarray(values if hasattr(values, "__len__") else list(values), dtype=float).reshape(-1)
    n = x.size
    if n == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * stats.sem(x, ddof=1))
    return mean, half


def _check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(
            f"The results table lacks the column(s) {', '.join(missing)} (it has: {', '.join(map(str, df.columns))}). "
            "It needs one row per method and episode with columns episode, method, accuracy."
        )


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def row_problem(row, episodes: int | None = None) -> str | None:
    """What is wrong with one result row (a dict as in episodes.jsonl), or None.

    The row rules of a results table: episode an int (in [0, episodes) when given), method
    a str, status (optional) 'ok' or 'failed', accuracy a fraction in [0, 1] (or null when
    the episode failed)."""
    if not isinstance(row, dict):
        return f"it is {json_kind(row)}, not a result row (a JSON object)"
    missing = [k for k in REQUIRED_COLUMNS if k not in row]
    if missing:
        return f"it lacks {', '.join(repr(k) for k in missing)}"
    e, m, acc, status = row["episode"], row["method"], row["accuracy"], row.get("status", "ok")
    if not _is_int(e) or e < 0:
        return f"episode {e!r} is not an episode number (an integer >= 0)"
    if episodes is not None and e >= episodes:
        return f"episode {e} is out of range: the run has {episodes} episodes (0 to {episodes - 1})"
    if not isinstance(m, str):
        return f"method {m!r} is not a method name (a string)"
    if status not in STATUSES:
        return f"status {status!r} is unknown (it is 'ok' or 'failed')"
    if status == "failed" and (acc is None or _is_number(acc)):
        return None
    if not _is_number(acc) or not 0.0 <= acc <= 1.0:  # NaN fails this too
        return f"accuracy {acc!r} is not a fraction in [0, 1]"
    return None


def json_kind(x) -> str:
    """How JSON would call the value `x`: 'a string', 'a list', 'null', ..."""
    if x is None:
        return "null"
    for kind, name in ((bool, "true/false"), (str, "a string"), (list, "a list"),
                       (dict, "an object")):
        if isinstance(x, kind):
            return name
    return "a number" if _is_number(x) else type(x).__name__


def split_failed(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """(rows with status 'ok', number of failed rows per method).

    Validates the table: accuracies of ok rows must be numbers in [0, 1] and each method
    may score each episode once, since pairing needs one value per episode.
    """
    _check_columns(df)
    if "status" in df.columns:
        status = df["status"].astype(str)
        unknown = sorted(set(status) - {"ok", "failed"})
        if unknown:
            raise BenchError(f"Unknown status value(s) {unknown} in the results; use 'ok' or 'failed'.")
        failed_mask = (status == "failed").to_numpy()
    else:
        failed_mask = np.zeros(len(df), dtype=bool)
    failed = df.loc[failed_mask].groupby("method", sort=False).size()
    ok = df.loc[~failed_mask].copy()
    acc = pd.to_numeric(ok["accuracy"], errors="coerce")
    bad = acc.isna() | (acc < 0) | (acc > 1)
    if bad.any():
        row = ok.loc[bad].iloc[0]
        value = row["accuracy"]
        value = value.item() if isinstance(value, np.generic) else value  # 0.5, not np.float64(0.5)
        raise BenchError(
            f"Accuracy must be a fraction in [0, 1]; got {value!r} for method {row['method']!r}, "
            f"episode {row['episode']} ({int(bad.sum())} such row(s)). Store accuracies as "
            "fractions (0.62, not 62), and give an episode without one status 'failed'."
        )
    ok["accuracy"] = acc.astype(float)
    dup = ok.duplicated(["method", "episode"], keep=False)
    if dup.any():
        row = ok.loc[dup].iloc[0]
        raise BenchError(
            f"Method {row['method']!r} has more than one result for episode {row['episode']} "
            f"({int(dup.sum())} duplicated row(s)); keep one row per method and episode (results of "
            "separate runs must not be concatenated)."
        )
    return ok, failed


def method_summary(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per method, in order of first appearance: n, failed, mean, ci95, std (percent)
    and `accuracy` formatted as "62.41 +- 0.83"."""
    ok, failed = split_failed(df)
    methods = list(pd.unique(df["method"]))
    rows = []
    for m in methods:
        acc = ok.loc[ok["method"] == m, "accuracy"].to_numpy(dtype=float)
        mean, half = mean_ci(acc, confidence)
        std = float(np.std(acc, ddof=1)) if acc.size > 1 else math.nan
        rows.append(
            {
                "method": m,
                "n": int(acc.size),
                "failed": int(failed.get(m, 0)),
                "mean": 100 * mean,
                "ci95": 100 * half,
                "std": 100 * std,
                "accuracy": _fmt_acc(100 * mean, 100 * half),
            }
        )
    return pd.DataFrame(rows, columns=["method", "n", "failed", "mean", "ci95", "std", "accuracy"])


def _fmt_acc(mean: float, half: float, sign: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    m = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    return m if math.isnan(half) else f"{m} +- {half:.2f}"


def paired_comparison(df: pd.DataFrame, a: str, b: str, confidence: float = 0.95) -> dict:
    """Compare method `b` against `a` on the episodes both completed (differences b - a).

    Returns n, mean_diff and ci95 (percentage points), t_stat/t_p (scipy.stats.ttest_rel),
    wilcoxon_p (scipy.stats.wilcoxon, zero_method='wilcox': episodes with equal accuracy are
    dropped, as in the classic test; with many ties scipy uses the normal approximation),
    wins/ties/losses of b over a. When every difference is zero both p-values are 1.0 (no
    evidence of a difference; scipy would give nan or raise).
    """
    ok, _ = split_failed(df)
    known = list(pd.unique(df["method"]))
    for m in (a, b):
        if m not in known:
            raise BenchError(f"No results for method {m!r}; the results hold: {', '.join(map(str, known))}.")
    if a == b:
        raise BenchError(f"Cannot compare method {a!r} with itself; name two different methods.")
    sa = ok.loc[ok["method"] == a].set_index("episode")["accuracy"]
    sb = ok.loc[ok["method"] == b].set_index("episode")["accuracy"]
    common = sa.index.intersection(sb.index).sort_values()
    if len(common) == 0:
        raise BenchError(
            f"Methods {a!r} and {b!r} share no completed episode, so they cannot be paired. "
            "Run both on the same episode file."
        )
    xa = sa.loc[common].to_numpy(dtype=float)
    xb = sb.loc[common].to_numpy(dtype=float)
    d = np.round(xb - xa, _DIFF_DECIMALS)
    n = int(d.size)
    mean, half = mean_ci(d, confidence)
    if not d.any():
        t_stat, t_p, w_p = 0.0, 1.0, 1.0
    else:
        with warnings.catch_warnings():
            # n == 1 or constant differences: scipy warns and returns nan/inf, which we keep.
            warnings.simplefilter("ignore", RuntimeWarning)
            tt = stats.ttest_rel(xb, xa)
            t_stat, t_p = float(tt.statistic), float(tt.pvalue)
            try:
                w_p = float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
            except ValueError:
                w_p = math.nan
    return {
        "a": a,
        "b": b,
        "n": n,
        "mean_diff": 100 * mean,
        "ci95": 100 * half,
        "t_stat": t_stat,
        "t_p": t_p,
        "wilcoxon_p": w_p,
        "wins": int((d > 0).sum()),
        "ties": int((d == 0).sum()),
        "losses": int((d < 0).sum()),
        "a_only": int(len(sa.index.difference(common))),
        "b_only": int(len(sb.index.difference(common))),
    }


def paired_table(df: pd.DataFrame, pairs: Sequence[tuple[str, str]], confidence: float = 0.95) -> pd.DataFrame:
    """`paired_comparison` for each (a, b) in `pairs`, one row each."""
    cols = ["a", "b", "n", "mean_diff", "ci95", "t_stat", "t_p", "wilcoxon_p"]
    cols += ["wins", "ties", "losses", "a_only", "b_only"]
    return pd.DataFrame([paired_comparison(df, a, b, confidence) for a, b in pairs], columns=cols)


def _fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _method_rows(method_df: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    headers = ["method", "episodes", "failed", "accuracy % (95% CI)", "std"]
    rows = [
        [str(r.method), str(r.n), str(r.failed), r.accuracy, "n/a" if math.isnan(r.std) else f"{r.std:.2f}"]
        for r in method_df.itertuples(index=False)
    ]
    return headers, rows, "lrrlr"


def _paired_rows(paired_df: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    headers = ["comparison (b - a)", "episodes", "diff pts (95% CI)", "t-test p", "Wilcoxon p", "wins/ties/losses"]
    rows = [
        [
            f"{r.b} - {r.a}",
            str(r.n),
            _fmt_acc(r.mean_diff, r.ci95, sign=True),
            _fmt_p(r.t_p),
            _fmt_p(r.wilcoxon_p),
            f"{r.wins}/{r.ties}/{r.losses}",
        ]
        for r in paired_df.itertuples(index=False)
    ]
    return headers, rows, "lrlrrr"


def _text_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md_table(headers: list[str], rows: list[list[str]], align: str) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    out.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _footnote(method_df: pd.DataFrame) -> str:
    n_failed = int(method_df["failed"].sum()) if "failed" in method_df else 0
    return f"{n_failed} failed episode(s) left out." if n_failed else ""


def band_summary(df: pd.DataFrame, dist, confidence: float = 0.95) -> pd.DataFrame:
    """Accuracy per class-frequency band of imbalanced episodes (`shots.ShotsDist`).

    Needs the rows' `class_shots` and `class_accuracy` lists. Per episode, a band's
    accuracy is the mean accuracy of that episode's classes in the band (equal queries per
    class); the table gives its mean over the episodes that have such a class, with a t CI.
    Columns: method, band, shots (lo-hi), episodes, classes, mean, ci95 (percent).
    """
    ok, _ = split_failed(df)
    bands = dist.bands()
    out = []
    for method, g in ok.groupby("method", sort=False):
        shots = np.array(g["class_shots"].tolist())
        acc = np.array(g["class_accuracy"].tolist(), dtype=float)
        band = dist.band_of(shots)
        for b, (name, lo, hi) in enumerate(bands):
            inside = band == b
            has = inside.any(1)
            per_episode = (acc * inside).sum(1)[has] / inside.sum(1)[has]
            mean, half = mean_ci(100.0 * per_episode, confidence)
            out.append({"method": method, "band": name, "shots": f"{lo}-{hi}",
                        "episodes": int(has.sum()), "classes": int(inside.sum()),
                        "mean": mean, "ci95": half})
    return pd.DataFrame(out)


def steps_summary(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Query accuracy after each of a run's --eval-steps (the rows' `accuracy_at_steps`
    dicts, step count -> fraction), for every trained method: columns method, steps,
    n, mean, ci95 (percent). The same episodes at every step count, so the differences
    between step counts are paired; failed episodes are left out."""
    ok, _ = split_failed(df)
    if "accuracy_at_steps" not in ok:
        return pd.DataFrame(columns=["method", "steps", "n", "mean", "ci95"])
    out = []
    for method, g in ok.groupby("method", sort=False):
        at = [d for d in g["accuracy_at_steps"] if isinstance(d, dict)]
        if not at:
            continue
        for steps in sorted(at[0], key=int):
            mean, half = mean_ci([100.0 * d[steps] for d in at], confidence)
            out.append({"method": method, "steps": int(steps), "n": len(at),
                        "mean": mean, "ci95": half})
    return pd.DataFrame(out, columns=["method", "steps", "n", "mean", "ci95"])


def _steps_rows(steps_df: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    counts = sorted(set(steps_df["steps"]))
    headers = ["accuracy % after steps"] + [str(c) for c in counts]
    rows = [[str(m)] + [_fmt_acc(r.mean, r.ci95) for r in g.sort_values("steps").itertuples()]
            for m, g in steps_df.groupby("method", sort=False)]
    return headers, rows, "l" + "r" * len(counts)


def _band_rows(band_df: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    bands = list(dict.fromkeys(band_df["band"]))
    headers = ["accuracy % by class frequency"] + bands
    rows = [[str(m)] + [_fmt_acc(r.mean, r.ci95) for r in g.itertuples(index=False)]
            for m, g in band_df.groupby("method", sort=False)]
    return headers, rows, "l" + "r" * len(bands)


def _summary(render, method_df: pd.DataFrame, paired_df: pd.DataFrame | None,
             band_df: pd.DataFrame | None, steps_df: pd.DataFrame | None = None) -> str:
    parts = [render(*_method_rows(method_df))]
    if paired_df is not None and len(paired_df):
        parts.append(render(*_paired_rows(paired_df)))
    if band_df is not None and len(band_df):
        parts.append(render(*_band_rows(band_df)))
    if steps_df is not None and len(steps_df):
        parts.append(render(*_steps_rows(steps_df)))
    note = _footnote(method_df)
    return "\n\n".join(parts) + (f"\n\n{note}" if note else "") + "\n"


def format_summary(method_df: pd.DataFrame, paired_df: pd.DataFrame | None = None,
                   band_df: pd.DataFrame | None = None,
                   steps_df: pd.DataFrame | None = None) -> str:
    """Plain-text tables for the terminal: per-method accuracy, then paired comparisons
    (and, for imbalanced episodes, accuracy per class-frequency band; with --eval-steps,
    accuracy after each step count)."""
    return _summary(_text_table, method_df, paired_df, band_df, steps_df)


def summary_markdown(method_df: pd.DataFrame, paired_df: pd.DataFrame | None = None,
                     band_df: pd.DataFrame | None = None,
                     steps_df: pd.DataFrame | None = None) -> str:
    """The same tables as `format_summary`, as GitHub Markdown (no `tabulate` needed)."""
    return _summary(_md_table, method_df, paired_df, band_df, steps_df)
