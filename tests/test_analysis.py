"""Analysis numbers must equal scipy's on the same inputs; formatting must be stable."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fewshot_bench.analysis import (
    format_summary,
    mean_ci,
    method_summary,
    paired_comparison,
    paired_table,
    summary_markdown,
)
from fewshot_bench.errors import BenchError


def results(n: int = 200, seed: int = 0, nq: int = 75) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Two methods on the same n episodes, accuracies k/nq like real episodes."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(nq, 0.6, size=n) / nq
    b = np.clip(a + rng.integers(-3, 5, size=n) / nq, 0, 1)
    df = pd.DataFrame(
        {
            "episode": np.concatenate([np.arange(n), np.arange(n)]),
            "method": ["ce"] * n + ["schane"] * n,
            "accuracy": np.concatenate([a, b]),
        }
    )
    return df, a, b


def test_mean_ci_matches_scipy_interval():
    x = np.random.default_rng(1).random(37)
    mean, half = mean_ci(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean())
    assert half == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert half == pytest.approx(stats.t.ppf(0.975, 36) * x.std(ddof=1) / math.sqrt(37), rel=1e-12)
    _, half99 = mean_ci(x, confidence=0.99)
    assert half99 > half


def test_mean_ci_edge_cases():
    m, h = mean_ci([0.7])
    assert m == 0.7 and math.isnan(h)
    m, h = mean_ci([])
    assert math.isnan(m) and math.isnan(h)
    assert mean_ci(v for v in (0.5, 0.5)) == (0.5, 0.0)


def test_method_summary_values_and_format():
    df, a, b = results()
    s = method_summary(df)
    assert list(s["method"]) == ["ce", "schane"]
    row = s.iloc[0]
    mean, half = mean_ci(a)
    assert row["n"] == 200 and row["failed"] == 0
    assert row["mean"] == pytest.approx(100 * mean)
    assert row["ci95"] == pytest.approx(100 * half)
    assert row["std"] == pytest.approx(100 * a.std(ddof=1))
    assert row["accuracy"] == f"{100 * mean:.2f} +- {100 * half:.2f}"


def test_method_summary_keeps_first_appearance_order():
    df = pd.DataFrame({"episode": [0, 0, 0, 1, 1, 1], "method": list("zaxzax"), "accuracy": [0.5] * 6})
    assert list(method_summary(df)["method"]) == ["z", "a", "x"]


def test_accuracy_string_exact():
    df = pd.DataFrame({"episode": [0, 1, 2, 3], "method": ["m"] * 4, "accuracy": [0.6, 0.62, 0.64, 0.66]})
    x = np.array([0.6, 0.62, 0.64, 0.66])
    half = stats.t.ppf(0.975, 3) * stats.sem(x) * 100
    assert method_summary(df).loc[0, "accuracy"] == f"63.00 +- {half:.2f}"


def test_paired_comparison_matches_scipy():
    df, a, b = results()
    r = paired_comparison(df, "ce", "schane")
    d = b - a
    assert r["n"] == 200
    assert r["mean_diff"] == pytest.approx(100 * d.mean())
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["ci95"] == pytest.approx(100 * (hi - lo) / 2, rel=1e-9)
    tt = stats.ttest_rel(b, a)
    assert r["t_p"] == pytest.approx(tt.pvalue, rel=1e-9)
    assert r["t_stat"] == pytest.approx(tt.statistic, rel=1e-9)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(np.round(d, 12)).pvalue, rel=1e-9)
    assert r["wins"] == int((d > 1e-12).sum()) and r["losses"] == int((d < -1e-12).sum())
    assert r["wins"] + r["ties"] + r["losses"] == 200


def test_paired_comparison_on_random_floats_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.random(40), rng.random(40)
    df = pd.DataFrame({"episode": list(range(40)) * 2, "method": ["a"] * 40 + ["b"] * 40, "accuracy": np.r_[a, b]})
    r = paired_comparison(df, "a", "b")
    assert r["t_p"] == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-9)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b - a).pvalue, rel=1e-9)


def test_wins_ties_losses_hand_made():
    df = pd.DataFrame(
        {
            "episode": [0, 1, 2, 3, 4] * 2,
            "method": ["a"] * 5 + ["b"] * 5,
            "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9] + [0.6, 0.6, 0.5, 0.9, 0.9],
        }
    )
    r = paired_comparison(df, "a", "b")
    assert (r["wins"], r["ties"], r["losses"]) == (2, 2, 1)
    r_rev = paired_comparison(df, "b", "a")
    assert (r_rev["wins"], r_rev["ties"], r_rev["losses"]) == (1, 2, 2)
    assert r_rev["mean_diff"] == pytest.approx(-r["mean_diff"])


def test_float_rounding_does_not_break_equal_differences():
    # 45/75-40/75 and 60/75-55/75 are the same 5/75 step but differ in float subtraction;
    # rounding makes them equal, so their spread (and the CI) is exactly zero.
    a = np.array([40, 55, 20]) / 75
    b = np.array([45, 60, 25]) / 75
    assert len(set(b - a)) > 1  # the float artefact this guards against
    df = pd.DataFrame({"episode": [0, 1, 2] * 2, "method": ["a"] * 3 + ["b"] * 3, "accuracy": np.r_[a, b]})
    r = paired_comparison(df, "a", "b")
    assert r["ci95"] == 0.0 and r["wins"] == 3


def test_all_zero_differences():
    df = pd.DataFrame({"episode": [0, 1, 2] * 2, "method": ["a"] * 3 + ["b"] * 3, "accuracy": [0.5, 0.6, 0.7] * 2})
    r = paired_comparison(df, "a", "b")
    assert r["wilcoxon_p"] == 1.0 and r["t_p"] == 1.0
    assert r["mean_diff"] == 0.0 and r["ci95"] == 0.0
    assert (r["wins"], r["ties"], r["losses"]) == (0, 3, 0)


def test_failed_rows_excluded_and_counted():
    df, a, b = results(n=50)
    df["status"] = "ok"
    df.loc[(df["method"] == "schane") & (df["episode"].isin([3, 7])), "status"] = "failed"
    df.loc[(df["method"] == "schane") & (df["episode"] == 3), "accuracy"] = np.nan  # failed rows may lack accuracy
    s = method_summary(df).set_index("method")
    assert s.loc["schane", "n"] == 48 and s.loc["schane", "failed"] == 2
    assert s.loc["ce", "n"] == 50 and s.loc["ce", "failed"] == 0
    keep = np.setdiff1d(np.arange(50), [3, 7])
    assert s.loc["schane", "mean"] == pytest.approx(100 * b[keep].mean())
    r = paired_comparison(df, "ce", "schane")
    assert r["n"] == 48 and r["a_only"] == 2 and r["b_only"] == 0
    assert r["t_p"] == pytest.approx(stats.ttest_rel(b[keep], a[keep]).pvalue)
    assert "2 failed episode(s)" in format_summary(s.reset_index())


def test_paired_only_common_episodes():
    acc = [0.5, 0.6, 0.7, 0.7, 0.6, 0.1]
    df = pd.DataFrame({"episode": [0, 1, 2, 1, 2, 3], "method": list("aaabbb"), "accuracy": acc})
    r = paired_comparison(df, "a", "b")
    assert r["n"] == 2 and (r["wins"], r["ties"], r["losses"]) == (1, 0, 1)


@pytest.mark.parametrize(
    "df, words",
    [
        (pd.DataFrame({"episode": [0], "method": ["a"]}), "lacks the column"),
        (pd.DataFrame({"episode": [0], "method": ["a"], "accuracy": [62.0]}), r"fraction in \[0, 1\]"),
        (pd.DataFrame({"episode": [0, 0], "method": ["a", "a"], "accuracy": [0.5, 0.6]}), "more than one result"),
        (pd.DataFrame({"episode": [0], "method": ["a"], "accuracy": [0.5], "status": ["weird"]}), "Unknown status"),
    ],
)
def test_bad_tables(df, words):
    with pytest.raises(BenchError, match=words):
        method_summary(df)


def test_a_nan_accuracy_is_named_plainly():
    df = pd.DataFrame({"episode": [0], "method": ["a"], "accuracy": [np.float64("nan")]})
    with pytest.raises(BenchError) as info:
        method_summary(df)
    assert "got nan for method 'a'" in str(info.value) and "np.float64" not in str(info.value)


def test_bad_comparisons():
    df, _, _ = results(n=5)
    with pytest.raises(BenchError, match="No results for method 'nope'"):
        paired_comparison(df, "ce", "nope")
    df2 = pd.DataFrame({"episode": [0, 1], "method": ["a", "b"], "accuracy": [0.5, 0.6]})
    with pytest.raises(BenchError, match="share no completed episode"):
        paired_comparison(df2, "a", "b")


def test_format_and_markdown():
    df, _, _ = results()
    ms = method_summary(df)
    pt = paired_table(df, [("ce", "schane")])
    assert list(pt.columns[:3]) == ["a", "b", "n"] and len(pt) == 1
    text = format_summary(ms, pt)
    assert ms.loc[0, "accuracy"] in text and "schane - ce" in text
    w, t, l = pt.loc[0, ["wins", "ties", "losses"]]
    assert f"{w}/{t}/{l}" in text
    md = summary_markdown(ms, pt)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| method |") and lines[1].startswith("|:---|")
    assert all(line.count("|") == lines[0].count("|") for line in lines[:4])
    assert f"| {ms.loc[1, 'accuracy']} |" in md
    # no paired table: only the method table
    assert "comparison" not in format_summary(ms)
    assert "comparison" not in summary_markdown(ms, pt.iloc[0:0])
