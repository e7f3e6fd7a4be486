"""`bench sweep` and fewshot_bench.sweep on tiny configurations: the grid, its table and
report, resume, refused input, the shared feature bank, and selection on validation
episodes that never touches test episodes or test data.

Everything is written under tmp_path (episodes, sweep folders, the working directory).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_helpers import explain, invoke
from fewshot_bench import runner, sweep
from fewshot_bench.errors import BenchError

GRID = ["--param", "lambda=0.5,1", "--param", "tau=0.1,0.5"]
POINTS = [(0.5, 0.1), (0.5, 0.5), (1.0, 0.1), (1.0, 0.5)]


def sweep_args(tiny, episodes: Path, out: Path, *extra: str) -> list[str]:
    """`bench sweep` with the tiny `bench run` options, --episodes-dir and --out."""
    return ["sweep", *tiny.args(episodes, out)[1:], *extra]


class Counter:
    """Wraps a function of `module` and records the configuration of each call."""

    def __init__(self, mp: pytest.MonkeyPatch, module, name: str):
        self.calls: list = []
        original = getattr(module, name)

        def wrapper(cfg, *args, **kwargs):
            self.calls.append(cfg)
            return original(cfg, *args, **kwargs)

        mp.setattr(module, name, wrapper)


def read_rows(folder: Path) -> pd.DataFrame:
    lines = (folder / "episodes.jsonl").read_text().splitlines()
    return pd.DataFrame([json.loads(x) for x in lines])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sweep")


@pytest.fixture(scope="module")
def first_sweep(tiny, work):
    """One `bench sweep` of a 2 x 2 grid (lambda x tau) with figures, shared below."""
    out = work / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        builds = Counter(mp, runner, "build_engine")
        result = invoke(sweep_args(tiny, work / "episodes", out, *GRID), work)
    assert result.exit_code == 0, explain(result)
    return result, out, builds


# --------------------------------------------------------------------------------------
# The grid, its table and its report
# --------------------------------------------------------------------------------------


def test_sweep_writes_table_report_and_record(first_sweep):
    result, out, _ = first_sweep
    for name in ("results.csv", "results.md", "sweep.json", "report/report.md",
                 "report/main_table.csv", "report/figures/hyperparameters.png",
                 "report/figures/hyperparameters.pdf"):
        assert (out / name).is_file(), name
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(["base"] + [f"lambda={lam:g}_tau={tau:g}" for lam, tau in POINTS])
    table = pd.read_csv(out / "results.csv")
    # base methods once, then the contrastive method once per grid point, in grid order
    assert list(table["method"]) == ["protonet", "ce"] + ["schane"] * 4
    assert list(table["point"]) == ["base", "base", "1", "2", "3", "4"]
    assert list(zip(table["lambda"][2:], table["tau"][2:])) == POINTS
    record = json.loads((out / "sweep.json").read_text())
    assert record["grid"] == [["lambda", [0.5, 1.0]], ["tau", [0.1, 0.5]]]
    assert record["base_methods"] == ["protonet", "ce"] and record["grid_methods"] == ["schane"]
    dirs = [f["dir"] for f in record["folders"]["test"]]
    assert dirs == ["runs/base"] + [f"runs/lambda={lam:g}_tau={tau:g}" for lam, tau in POINTS]
    md = (out / "results.md").read_text()
    assert "| point | lambda | tau | method |" in md and md.count("| schane |") == 4
    assert "point 4/4: lambda=1, tau=0.5" in result.stderr  # one progress line per point
    # the report pairs the base CE with every grid point: one episode file
    paired = pd.read_csv(out / "report" / "paired_table.csv")
    assert {"schane(lambda=0.5,tau=0.1)", "schane(lambda=1,tau=0.5)"} <= set(paired["b"])
    assert paired["episodes_hash"].nunique() == 1


def test_table_numbers_equal_the_run_folders(first_sweep):
    _, out, _ = first_sweep
    table = pd.read_csv(out / "results.csv")
    ce = read_rows(out / "runs" / "base").query("method == 'ce'").set_index("episode")["accuracy"]
    for r in table.itertuples():
        summary = pd.read_csv(out / r.run / "summary.csv").set_index("method").loc[r.method]
        assert (r.n, r.failed, r.accuracy) == (summary["n"], summary["failed"], summary["accuracy"])
        assert r.mean == pytest.approx(summary["mean"]) and r.ci95 == pytest.approx(summary["ci95"])
        if r.method == "ce":
            assert math.isnan(r.diff_vs_ce)
            continue
        acc = read_rows(out / r.run).query("method == @r.method").set_index("episode")["accuracy"]
        assert r.diff_vs_ce == pytest.approx(100 * (acc - ce.loc[acc.index]).mean(), abs=1e-9)
        assert r.diff_n == len(acc)


def test_the_bank_is_built_once_and_changes_no_result(first_sweep, tiny, work):
    _, out, builds = first_sweep
    assert len(builds.calls) == 1
    # a grid point equals the same settings run on their own, with a bank of their own
    cfg = tiny.config(work / "episodes", work / "alone", methods=("schane",), lam=1.0, tau=0.1)
    alone = runner.run(cfg, progress=False, echo=lambda m: None)
    swept = read_rows(out / "runs" / "lambda=1_tau=0.1")
    assert list(alone.rows["accuracy"]) == list(swept["accuracy"])


def test_rerun_keeps_finished_points_and_resumes_a_stopped_one(first_sweep, tiny, work):
    _, first, _ = first_sweep
    out = work / "resumed"
    shutil.copytree(first, out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/run.json")}
    args = sweep_args(tiny, work / "episodes", out, *GRID, "--no-figures")
    with pytest.MonkeyPatch.context() as mp:
        runs = Counter(mp, runner, "run")
        result = invoke(args, work)
    assert result.exit_code == 0, explain(result)
    assert runs.calls == []
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/run.json")} == mtimes
    assert result.stderr.count("finished earlier, kept") == 5

    # a point stopped after its first two episodes: its own resume finishes it
    stopped = out / "runs" / "lambda=0.5_tau=0.5"
    record = json.loads((stopped / "run.json").read_text())
    del record["finished"]
    (stopped / "run.json").write_text(json.dumps(record))
    lines = (stopped / "episodes.jsonl").read_text().splitlines(keepends=True)
    (stopped / "episodes.jsonl").write_text("".join(lines[:2]))
    with pytest.MonkeyPatch.context() as mp:
        runs = Counter(mp, runner, "run")
        result = invoke(args, work)
    assert result.exit_code == 0, explain(result)
    assert [c.out for c in runs.calls] == [str(stopped)]
    assert "resuming: 2 results kept" in result.stderr
    assert list(read_rows(stopped)["accuracy"]) == list(
        read_rows(first / "runs" / "lambda=0.5_tau=0.5")["accuracy"])
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"),
                                  pd.read_csv(first / "results.csv"))


@pytest.mark.parametrize("change, named", [
    (["--param", "lambda=0.5", "--param", "tau=0.1,0.5"], "--param"),
    ([*GRID, "--steps", "3"], "steps"),
    ([*GRID, "--select-on", "val"], "--select-on"),
])
def test_another_grid_or_settings_in_the_same_folder_is_refused(first_sweep, tiny, work,
                                                                change, named):
    _, out, _ = first_sweep
    before = (out / "sweep.json").read_text()
    result = invoke(sweep_args(tiny, work / "episodes", out, *change), work)
    assert result.exit_code == 2, explain(result)
    assert f"Cannot resume the sweep in {out}" in result.stderr and named in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "sweep.json").read_text() == before


# --------------------------------------------------------------------------------------
# Refused input, before any work
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, message", [
    (["gamma=1"], "unknown parameter 'gamma'"),
    (["lambda"], "is not NAME=V1,V2"),
    (["lambda="], "lists no values"),
    (["lambda=0.5,"], "empty value"),
    (["lambda=abc"], "'abc' is not a number"),
    (["tau=nan"], "not a finite number"),
    (["steps=2.5"], "whole numbers"),
    (["lambda=0.5,0.5"], "0.5 more than once"),
    (["lambda=0.5", "lam=1"], "given twice"),
    (["lambda=0.5,1.5"], "Grid point lambda=1.5: --lambda must lie in [0, 1]"),
    (["tau=0.1,-1"], "Grid point tau=-1: --tau must be positive"),
    (["views=2,16"], "Grid point views=16: --bank-views (2) must be at least --views (16)"),
])
def test_bad_params_exit_2_before_any_work(tiny, tmp_path, params, message):
    args = [a for p in params for a in ("--param", p)]
    result = invoke(sweep_args(tiny, tmp_path / "episodes", tmp_path / "out", *args), tmp_path)
    assert result.exit_code == 2, explain(result)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "episodes").exists()


@pytest.mark.parametrize("extra, message", [
    (["--param", "lambda=0.5", "--methods", "protonet,ce"], "No method in --methods"),
    (["--param", "lambda=0.5", "--select-on", "val", "--target", "ce"],
     "--target ce does not depend"),
    (["--param", "lambda=0.5", "--select-on", "val", "--split", "val"], "Pass --split test"),
])
def test_sweeps_that_cannot_work_exit_2(tiny, tmp_path, extra, message):
    result = invoke(sweep_args(tiny, tmp_path / "episodes", tmp_path / "out", *extra), tmp_path)
    assert result.exit_code == 2, explain(result)
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_unusable_episodes_dir_exits_2_before_the_sweep_folder_exists(tiny, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for episodes in (a_file, a_file / "eps"):
        result = invoke(sweep_args(tiny, episodes, tmp_path / "out", *GRID), tmp_path)
        assert result.exit_code == 2, explain(result)
        assert "--episodes-dir" in result.stderr and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()


def test_damaged_sweep_record_exits_2(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"config": None, "grid": []}))
    result = invoke(sweep_args(tiny, tmp_path / "episodes", out, *GRID), tmp_path)
    assert result.exit_code == 2, explain(result)
    assert "'config' is null, not an object" in result.stderr
    assert [p.name for p in out.iterdir()] == ["sweep.json"]


@pytest.mark.parametrize("damage, words", [
    (lambda run: (run / "run.json").write_text(json.dumps(
        {**json.loads((run / "run.json").read_text()), "hardware": "x"})), "'hardware' is a string"),
    (lambda run: (run / "run.json").write_text("null"), "holds null"),
    (lambda run: (run / "episodes.jsonl").write_text(
        (run / "episodes.jsonl").read_text() + "5\n"), "episodes.jsonl line"),
])
def test_a_damaged_run_folder_in_the_sweep_exits_2(first_sweep, tiny, work, tmp_path, damage,
                                                   words):
    _, first, _ = first_sweep
    out = tmp_path / "sweep"
    shutil.copytree(first, out)
    damage(out / "runs" / "base")
    before = {p: p.read_bytes() for p in (out / "runs").rglob("*") if p.is_file()}
    result = invoke(sweep_args(tiny, work / "episodes", out, *GRID, "--no-figures"), work)
    assert result.exit_code == 2, explain(result)
    assert words in result.stderr and "runs/base" in result.stderr, explain(result)
    assert {p: p.read_bytes() for p in (out / "runs").rglob("*") if p.is_file()} == before


def test_parse_params_names_and_types():
    grid = sweep.parse_params(["Lambda=0, 0.5", "weight-decay=1e-4", "steps=10,20.0", "lr=.1"])
    assert grid == {"lambda": (0.0, 0.5), "weight_decay": (1e-4,), "steps": (10, 20), "lr": (0.1,)}
    assert all(isinstance(v, int) for v in grid["steps"])
    assert sweep.grid_points({"lambda": (0, 1), "tau": (0.1, 0.5)})[1] == {"lambda": 0, "tau": 0.5}
    with pytest.raises(BenchError):
        sweep.parse_params([])


def test_methods_split_into_base_and_grid(tiny, tmp_path):
    cfg = tiny.config(tmp_path, tmp_path, methods=("protonet", "ce", "schane", "supcon"))
    plan = sweep.plan_sweep(cfg, {"lambda": (0.5, 1.0)})
    assert (plan.base_methods, plan.grid_methods) == (("protonet", "ce"), ("schane", "supcon"))
    plan = sweep.plan_sweep(cfg, {"lambda": (0.5,), "lr": (0.01, 0.1)})  # CE trains with lr
    assert (plan.base_methods, plan.grid_methods) == (("protonet",), ("ce", "schane", "supcon"))


def test_choose_takes_the_first_of_equal_best_and_skips_nan():
    assert sweep.choose([40.0, 55.0, 55.0, 30.0]) == 1
    assert sweep.choose([math.nan, 20.0, 20.0]) == 1
    with pytest.raises(BenchError):
        sweep.choose([math.nan, math.nan])


# --------------------------------------------------------------------------------------
# --select-on val
# --------------------------------------------------------------------------------------


def test_select_on_val_chooses_without_touching_test(tiny, tmp_path, monkeypatch):
    episodes, out = tmp_path / "episodes", tmp_path / "sweep"
    # lambda=1 first, and enough training that the grid points differ on val
    cfg = tiny.config(episodes, out, steps=5, lr=0.2)
    grid = sweep.parse_params(["lambda=1,0", "tau=0.1,0.5"])
    selecting, seen = [], set()
    builds = Counter(monkeypatch, runner, "build_engine")

    def guard(name, fn):
        def wrapper(*args, **kwargs):
            split = args[1] if name == "create_dataset" else args[1].split
            seen.add((name, split, bool(selecting)))
            if selecting and split == "test":
                raise AssertionError(f"{name} asked for the test split during selection")
            return fn(*args, **kwargs)
        monkeypatch.setattr(runner, name, wrapper)

    guard("create_dataset", runner.create_dataset)
    guard("get_or_create_episodes", runner.get_or_create_episodes)
    select = sweep.select_point

    def watched_select(val_cfg, *args, **kwargs):
        assert val_cfg.split == "val"
        selecting.append(True)
        try:
            return select(val_cfg, *args, **kwargs)
        finally:
            assert not list(episodes.glob("*-test-*")), "a test episode file exists already"
            selecting.clear()

    monkeypatch.setattr(sweep, "select_point", watched_select)
    result = sweep.run_sweep(cfg, grid, out, select_on="val", progress=False,
                             echo=lambda m: None, figures=False)

    # the choice: the argmax of val accuracy of schane over the grid, first on ties
    # (lambda=0, tau=0.5) shares the folder of (lambda=0, tau=0.1): tau cannot matter there
    plan, points = sweep.plan_sweep(cfg, grid), sweep.grid_points(grid)
    val_means = [pd.read_csv(out / "val" / "runs" / sweep.point_name(points[plan.same_as(i)])
                             / "summary.csv").set_index("method").loc["schane", "mean"]
                 for i in range(len(points))]
    assert len(set(val_means)) > 1, "the grid points should differ on val"
    best = int(np.argmax(val_means))  # argmax returns the first of equal maxima
    selection = json.loads((out / "selection.json").read_text())
    assert selection == result.selection
    assert selection["chosen"]["point"] == best + 1
    assert selection["chosen"]["values"] == sweep.grid_points(grid)[best]
    assert [s["mean"] for s in selection["scores"]] == pytest.approx(val_means)
    assert selection["episodes"]["key"].startswith("emoji-val-")

    # then only the chosen point and the base methods ran on test
    chosen = sweep.point_name(sweep.grid_points(grid)[best])
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(["base", chosen])
    assert len(list((out / "val" / "runs").iterdir())) == 4  # base + 3 distinct points
    assert list(result.table["run"]) == ["runs/base", "runs/base", f"runs/{chosen}"]
    assert json.loads((out / "runs" / chosen / "run.json").read_text())["config"]["split"] == "test"
    assert f"| {best + 1}* |" in (out / "val" / "results.md").read_text()
    assert (out / "report" / "report.md").is_file()
    assert (out / "val" / "report" / "report.md").is_file()
    # one bank per split; the guards saw val during selection and test only after it
    assert [c.split for c in builds.calls] == ["val", "test"]
    assert seen == {(name, split, split == "val") for split in ("val", "test")
                    for name in ("create_dataset", "get_or_create_episodes")}


def test_select_point_refuses_the_test_split(tiny, tmp_path):
    with pytest.raises(ValueError):
        sweep.select_point(tiny.config(tmp_path, tmp_path), {"lambda": (0.5,)}, tmp_path, "schane")


def test_points_that_change_nothing_share_one_run(tiny, work):
    """With lambda = 0 the contrastive term is off, so tau cannot matter: the second such
    point reuses the first one's run folder (same numbers in the table) instead of
    repeating the run."""
    out = work / "lambda0"
    with pytest.MonkeyPatch.context() as mp:
        runs = Counter(mp, runner, "run")
        result = invoke(sweep_args(tiny, work / "episodes", out, "--no-figures", "--param",
                                   "lambda=0,0.5", "--param", "tau=0.1,0.5"), work)
    assert result.exit_code == 0, explain(result)
    assert "the same runs as point 1" in result.output
    assert len(runs.calls) == 1 + 3  # base + three distinct grid points
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["base", "lambda=0_tau=0.1", "lambda=0.5_tau=0.1", "lambda=0.5_tau=0.5"])
    table = pd.read_csv(out / "results.csv")
    grid = table[table["point"] != "base"].set_index("point")
    assert list(grid.index) == ["1", "2", "3", "4"]
    assert grid.loc["2", "run"] == grid.loc["1", "run"] == "runs/lambda=0_tau=0.1"
    assert grid.loc["2", "tau"] == 0.5 and grid.loc["2", "mean"] == grid.loc["1", "mean"]
    # lambda 0 is CE: the paired difference is exactly zero
    assert grid.loc["1", "diff_vs_ce"] == 0
