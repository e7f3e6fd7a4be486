"""`bench baseline` and `bench check`: the accuracy regression gate.

End to end on tiny real runs (a re-run passes, a randomly initialised backbone fails,
other protocols exit 2) and on fake run folders (the decision equals scipy's on the same
numbers; --min-drop and small n keep noise and negligible drops from failing the build).
Everything is written under tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cli_helpers import explain, invoke
from fake_runs import accuracies, write_run
from fewshot_bench.baseline import check_run, create_baseline, load_baseline
from fewshot_bench.errors import BenchError
from fewshot_bench.config import RunConfig

# More episodes than the shared tiny run, so that a real degradation is significant
# at alpha 0.01; still a few seconds per run.
GATE = ("--episodes", "12", "--queries", "5", "--methods", "protonet,ce")


# --------------------------------------------------------------------------------------
# Real runs through the CLI
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def base(tiny, work):
    """A tiny run stored as the baseline: (run folder, baseline file)."""
    out = work / "base"
    r = invoke(tiny.args(work / "episodes", out, *GATE), work)
    assert r.exit_code == 0, explain(r)
    file = work / "baselines" / "tiny.json"
    r = invoke(["baseline", str(out), "--out", str(file)], work)
    assert r.exit_code == 0, explain(r)
    return out, file


def test_baseline_file_holds_config_hashes_and_per_episode_accuracies(base):
    out, file = base
    b = json.loads(file.read_text())
    record = json.loads((out / "run.json").read_text())
    assert b["config"] == record["config"]
    assert b["episodes"]["content_hash"] == record["episodes"]["content_hash"]
    assert b["episodes"]["data_fingerprint"] == record["episodes"]["data_fingerprint"]
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert set(b["methods"]) == {"protonet", "ce"}
    for m, s in b["methods"].items():
        acc = [r["accuracy"] for r in sorted(rows, key=lambda r: r["episode"]) if r["method"] == m]
        assert s["accuracy"] == acc and s["episodes"] == list(range(12)) and s["n"] == 12
        assert s["mean"] == pytest.approx(100 * np.mean(acc))
        assert s["std"] == pytest.approx(100 * np.std(acc, ddof=1))
    assert not [p for p in file.parent.iterdir() if p.name != file.name]  # atomic: no temp left


def test_a_rerun_of_the_baseline_configuration_passes(tiny, work, base):
    _, file = base
    out = work / "rerun"
    r = invoke(tiny.args(work / "episodes", out, *GATE), work)
    assert r.exit_code == 0, explain(r)
    r = invoke(["check", str(out), "--baseline", str(file)], work)
    assert r.exit_code == 0, explain(r)
    assert "PASS" in r.stdout and "changed settings: none" in r.stdout
    assert "paired t-test" in r.stdout
    r = invoke(["check", str(out), "--baseline", str(file), "--json"], work)
    assert r.exit_code == 0, explain(r)
    data = json.loads(r.stdout)
    assert data["passed"] is True and data["paired"] is True
    assert [m["verdict"] for m in data["methods"]] == ["pass", "pass"]


def test_a_randomly_initialised_backbone_fails(tiny, work, base):
    import timm
    import torch

    _, file = base
    torch.manual_seed(0)
    weights = work / "random-lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
               .state_dict(), weights)
    out = work / "random"
    r = invoke(tiny.args(work / "episodes", out, *GATE, "--weights", str(weights)), work)
    assert r.exit_code == 0, explain(r)
    r = invoke(["check", str(out), "--baseline", str(file)], work)
    assert r.exit_code == 1, explain(r)
    assert "FAIL" in r.stdout
    assert "weights default -> " in r.stdout  # same protocol, another model: a changed setting
    r = invoke(["check", str(out), "--baseline", str(file), "--json"], work)
    assert r.exit_code == 1, explain(r)
    data = json.loads(r.stdout)
    assert data["passed"] is False and data["failed_methods"]
    assert "weights" in data["changed_settings"] and "weights_sha256" in data["changed_settings"]


@pytest.mark.parametrize("extra", [("--shots", "2"), ("--ways", "4"), ("--queries", "4"),
                                   ("--split", "val"), ("--groups", "none")],
                         ids=lambda x: x[0])
def test_another_protocol_exits_2(tiny, work, base, extra):
    _, file = base
    out = work / f"other{extra[0]}"
    # protonet only (no fine-tuning): the protocol is refused before methods are looked at
    r = invoke(tiny.args(work / "episodes", out, "--methods", "protonet", *extra), work)
    assert r.exit_code == 0, explain(r)
    r = invoke(["check", str(out), "--baseline", str(file)], work)
    assert r.exit_code == 2, explain(r)
    setting = {"groups": "grouped"}.get(extra[0].lstrip("-"), extra[0].lstrip("-"))
    assert "protocol" in r.stderr and setting in r.stderr


def test_another_data_set_exits_2(tmp_path):
    base = write_run(tmp_path / "a", {"ce": accuracies(30, 0.6, 1)})
    other = write_run(tmp_path / "b", {"ce": accuracies(30, 0.6, 2)}, dataset="cifar-fs")
    create_baseline(base, tmp_path / "b.json")
    with pytest.raises(BenchError, match="dataset"):
        check_run(other, tmp_path / "b.json")
    r = invoke(["check", str(other), "--baseline", str(tmp_path / "b.json")])
    assert r.exit_code == 2 and "dataset" in r.stderr, explain(r)


# --------------------------------------------------------------------------------------
# Unusable input: exit 2
# --------------------------------------------------------------------------------------


def test_a_method_missing_in_the_run_exits_2(tmp_path):
    base = write_run(tmp_path / "a", {"ce": accuracies(30, 0.6, 1), "schane": accuracies(30, 0.6, 2)})
    now = write_run(tmp_path / "b", {"ce": accuracies(30, 0.6, 1)})
    create_baseline(base, tmp_path / "b.json")
    r = invoke(["check", str(now), "--baseline", str(tmp_path / "b.json")])
    assert r.exit_code == 2 and "schane" in r.stderr, explain(r)


def test_unreadable_files_exit_2(tmp_path):
    run = write_run(tmp_path / "a", {"ce": accuracies(30, 0.6, 1)})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    for file, words in [(bad, "Cannot read"), (other, "not a `bench baseline` file"),
                        (tmp_path / "none.json", "does not exist")]:
        r = invoke(["check", str(run), "--baseline", str(file)])
        assert r.exit_code == 2 and words in r.stderr, explain(r)
    create_baseline(run, tmp_path / "ok.json")
    for folder in (tmp_path / "missing", tmp_path):
        r = invoke(["check", str(folder), "--baseline", str(tmp_path / "ok.json")])
        assert r.exit_code == 2, explain(r)
        r = invoke(["baseline", str(folder), "--out", str(tmp_path / "x.json")])
        assert r.exit_code == 2, explain(r)
    unfinished = write_run(tmp_path / "u", {"ce": accuracies(30, 0.6, 1)}, finished=False)
    r = invoke(["baseline", str(unfinished), "--out", str(tmp_path / "u.json")])
    assert r.exit_code == 2 and "did not finish" in r.stderr, explain(r)
    for opt in (["--alpha", "0"], ["--alpha", "1.5"], ["--min-drop", "-1"]):
        r = invoke(["check", str(run), "--baseline", str(tmp_path / "ok.json"), *opt])
        assert r.exit_code == 2, explain(r)


def test_out_inside_the_run_or_on_a_foreign_file_is_refused(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.6, 1)})
    episode_file = tmp_path / "eps" / "x.npz"
    episode_file.parent.mkdir()
    episode_file.write_bytes(b"PK\x03\x04 not really")
    other = write_run(tmp_path / "other", {"ce": accuracies(10, 0.6, 1)})
    files = [run / "run.json", run / "episodes.jsonl", run / "new.json", episode_file,
             other / "run.json"]
    before = {f: f.read_bytes() for f in files if f.exists()}
    for out, words in [(run / "run.json", "inside the run folder"),
                       (run / "episodes.jsonl", "inside the run folder"),
                       (run / "new.json", "inside the run folder"),
                       (episode_file, "not a baseline file"), (other / "run.json", "not a baseline")]:
        r = invoke(["baseline", str(run), "--out", str(out)])
        assert r.exit_code == 2 and words in r.stderr, explain(r)
        assert "\n" not in r.stderr.strip()
    assert {f: f.read_bytes() for f in files if f.exists()} == before
    assert not (run / "new.json").exists()
    # an earlier baseline is replaced, as the help says
    good = tmp_path / "b.json"
    create_baseline(other, good)
    r = invoke(["baseline", str(run), "--out", str(good)])
    assert r.exit_code == 0, explain(r)
    assert json.loads(good.read_text())["source_run"] == str(run)


def _damage_baseline(path: Path, method: str, **changes) -> None:
    data = json.loads(path.read_text())
    data["methods"][method].update(changes)
    path.write_text(json.dumps(data).replace('"INF"', "1e400"))


@pytest.mark.parametrize("changes, words", [
    (dict(episodes=[], accuracy=[]), "no per-episode accuracies"),
    (dict(episodes=list(range(100, 130))), "episode 100 is out of range"),
    (dict(episodes=["INF"] + list(range(1, 30))), "episode inf"),
    (dict(accuracy=[float("nan")] * 30), "accuracy nan"),
    (dict(accuracy=[0.5] * 29), "30 episode ids but 29 accuracies"),
    (dict(episodes=[0] * 30), "lists an episode twice"),
])
def test_a_damaged_baseline_exits_2_and_says_so(tmp_path, changes, words):
    run = write_run(tmp_path / "run", {"ce": accuracies(30, 0.6, 1)})
    base = tmp_path / "b.json"
    create_baseline(run, base)
    _damage_baseline(base, "ce", **changes)
    r = invoke(["check", str(run), "--baseline", str(base)])
    assert r.exit_code == 2, explain(r)
    assert words in r.stderr and "baseline file" in r.stderr and "damaged" in r.stderr, r.stderr
    assert "np.float64" not in r.stderr and "FAIL" not in r.output


def test_baseline_ids_matching_none_of_the_runs_is_damage_not_a_fail(tmp_path):
    # ids in range for the baseline's config, but the run (same episode file) has others
    run = write_run(tmp_path / "run", {"ce": accuracies(30, 0.6, 1)})
    base = tmp_path / "b.json"
    create_baseline(run, base)
    data = json.loads(base.read_text())
    data["config"]["episodes"] = 100
    data["methods"]["ce"]["episodes"] = list(range(50, 80))
    base.write_text(json.dumps(data))
    r = invoke(["check", str(run), "--baseline", str(base)])
    assert r.exit_code == 2 and "match none of the run's" in r.stderr, explain(r)


def test_a_run_whose_method_never_completed_is_not_stored(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(3, 0.6, 1)}, failed={"ce": [0, 1, 2]})
    r = invoke(["baseline", str(run), "--out", str(tmp_path / "b.json")])
    assert r.exit_code == 2 and "Every episode of ce failed" in r.stderr, explain(r)
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("command", ["baseline", "check"])
@pytest.mark.parametrize("damage, words", [
    (lambda run: (run / "run.json").write_text("null"), "holds null"),
    (lambda run: (run / "run.json").write_text("[]"), "holds a list"),
    (lambda run: (run / "run.json").write_text(json.dumps(
        {**json.loads((run / "run.json").read_text()), "hardware": "x"})), "'hardware' is a string"),
    (lambda run: (run / "episodes.jsonl").write_text(
        (run / "episodes.jsonl").read_text() + "5\n"), "line 31 is damaged"),
    (lambda run: (run / "episodes.jsonl").write_text(
        (run / "episodes.jsonl").read_text() + '{"episode": 99, "method": "ce", "accuracy": 0.5}\n'),
     "out of range"),
    (lambda run: (run / "episodes.jsonl").write_bytes(
        b"\xff" + (run / "episodes.jsonl").read_bytes()), "line 1"),
])
def test_a_damaged_run_exits_2(tmp_path, command, damage, words):
    run = write_run(tmp_path / "run", {"ce": accuracies(30, 0.6, 1)})
    base = tmp_path / "b.json"
    create_baseline(run, base)
    damage(run)
    args = ({"baseline": ["baseline", str(run), "--out", str(tmp_path / "new.json")],
             "check": ["check", str(run), "--baseline", str(base)]})[command]
    r = invoke(args)
    assert r.exit_code == 2 and words in r.stderr, explain(r)
    assert "Traceback" not in r.output and "\n" not in r.stderr.strip()


# --------------------------------------------------------------------------------------
# The statistics, on fake runs
# --------------------------------------------------------------------------------------


def _pair(tmp_path, base_acc: dict, now_acc: dict, same_episodes: bool = True, **now_cfg):
    a = write_run(tmp_path / "base", base_acc)
    key = {} if same_episodes else {"episodes_hash": "f" * 64}
    b = write_run(tmp_path / "now", now_acc, **key, **now_cfg)
    create_baseline(a, tmp_path / "base.json")
    return b, tmp_path / "base.json"


def test_paired_decision_matches_scipy(tmp_path):
    n = 200
    base = accuracies(n, 0.60, 1)
    now = np.clip(base - np.random.default_rng(2).choice([0, 0.0267, 0.0533], n), 0, 1)
    run, file = _pair(tmp_path, {"ce": base}, {"ce": now})
    res = check_run(run, file)
    row = res.methods.iloc[0]
    tt = stats.ttest_rel(now, base, alternative="less")
    d = now - base
    half = stats.t.ppf(0.975, n - 1) * stats.sem(d)
    assert res.paired and row["test"] == "paired" and row["n_paired"] == n
    assert row["p"] == pytest.approx(tt.pvalue, rel=1e-9)
    assert row["t_stat"] == pytest.approx(tt.statistic, rel=1e-9)
    assert row["diff"] == pytest.approx(100 * d.mean())
    assert row["ci95"] == pytest.approx(100 * half)
    expected = tt.pvalue < 0.01 and 100 * (base.mean() - now.mean()) > 1.0
    assert expected and row["verdict"] == "FAIL" and not res.passed
    r = invoke(["check", str(run), "--baseline", str(file)])
    assert r.exit_code == 1, explain(r)


def test_unpaired_decision_matches_scipy_welch(tmp_path):
    base = accuracies(300, 0.60, 1)
    now = accuracies(250, 0.57, 7)
    run, file = _pair(tmp_path, {"ce": base}, {"ce": now}, same_episodes=False)
    res = check_run(run, file, alpha=0.05, min_drop=0.5)
    row = res.methods.iloc[0]
    tt = stats.ttest_ind(now, base, equal_var=False, alternative="less")
    ci = stats.ttest_ind(now, base, equal_var=False).confidence_interval(0.95)
    assert not res.paired and row["test"] == "welch" and row["n_paired"] == 0
    assert (row["n_base"], row["n_now"]) == (300, 250)
    assert row["p"] == pytest.approx(tt.pvalue, rel=1e-9)
    assert row["diff"] == pytest.approx(100 * (now.mean() - base.mean()))
    assert row["ci95"] == pytest.approx(100 * (ci.high - ci.low) / 2)
    expected = "FAIL" if tt.pvalue < 0.05 and 100 * (base.mean() - now.mean()) > 0.5 else "pass"
    assert row["verdict"] == expected
    assert "episodes_hash" in res.changed and "Welch" in res.text


def test_min_drop_keeps_a_tiny_significant_drop_from_failing(tmp_path):
    n = 600
    base = accuracies(n, 0.60, 1)
    now = base.copy()
    now[: n // 2] -= 1 / 75  # one query fewer right in half the episodes: -0.67 points
    run, file = _pair(tmp_path, {"ce": base}, {"ce": np.clip(now, 0, 1)})
    res = check_run(run, file)
    row = res.methods.iloc[0]
    assert row["p"] < 1e-6 and 0 < row["drop"] < 1.0
    assert row["verdict"] == "pass" and res.passed
    assert check_run(run, file, min_drop=0.5).methods.iloc[0]["verdict"] == "FAIL"
    r = invoke(["check", str(run), "--baseline", str(file), "--min-drop", "0.5"])
    assert r.exit_code == 1, explain(r)


def test_a_large_drop_on_few_episodes_is_not_significant_and_passes(tmp_path):
    base = np.array([0.60, 0.40, 0.80])
    now = np.array([0.20, 0.47, 0.53])  # mean drop 20 points, but noisy and n = 3
    run, file = _pair(tmp_path, {"ce": base}, {"ce": now})
    row = check_run(run, file).methods.iloc[0]
    assert row["drop"] > 10
    assert row["p"] == pytest.approx(stats.ttest_rel(now, base, alternative="less").pvalue)
    assert row["p"] > 0.01 and row["verdict"] == "pass"
    r = invoke(["check", str(run), "--baseline", str(file)])
    assert r.exit_code == 0, explain(r)


def test_a_significant_gain_is_flagged_not_failed(tmp_path):
    base = accuracies(300, 0.55, 1)
    now = np.clip(base + 0.04, 0, 1)
    run, file = _pair(tmp_path, {"ce": base}, {"ce": now}, lr=0.03)
    res = check_run(run, file)
    assert res.passed and res.methods.iloc[0]["verdict"] == "improved?"
    assert res.changed["lr"] == (RunConfig().validate().lr, 0.03)
    assert "lr 0.001 -> 0.03" in res.text


def test_identical_results_pass_with_p_1(tmp_path):
    base = accuracies(50, 0.6, 3)
    run, file = _pair(tmp_path, {"ce": base, "schane": base}, {"ce": base, "schane": base})
    res = check_run(run, file)
    assert res.passed and list(res.methods["p"]) == [1.0, 1.0]
    assert list(res.methods["diff"]) == [0.0, 0.0]


def test_failed_episodes_are_left_out_and_all_failed_fails(tmp_path):
    base = accuracies(40, 0.6, 3)
    run, file = _pair(tmp_path, {"ce": base, "schane": base}, {"ce": base, "schane": base},
                      failed={"ce": [0, 1], "schane": list(range(40))})
    res = check_run(run, file)
    ce, sch = res.methods.iloc[0], res.methods.iloc[1]
    assert ce["n_paired"] == 38 and ce["failed_now"] == 2 and ce["verdict"] == "pass"
    assert sch["n_now"] == 0 and sch["verdict"] == "FAIL" and not res.passed


def test_extra_methods_in_the_run_are_reported_not_checked(tmp_path):
    base = accuracies(50, 0.6, 3)
    run, file = _pair(tmp_path, {"ce": base}, {"ce": base, "schane": base * 0})
    res = check_run(run, file)
    assert res.passed and list(res.methods["method"]) == ["ce"]
    assert any("schane" in n for n in res.notes)


def test_baseline_round_trip_and_overwrite(tmp_path):
    run = write_run(tmp_path / "a", {"ce": accuracies(20, 0.6, 1)})
    file = tmp_path / "deep" / "dir" / "b.json"
    create_baseline(run, file)
    first = load_baseline(file)
    create_baseline(run, file)  # overwriting is allowed (regenerating the baseline)
    assert load_baseline(file)["methods"] == first["methods"]
    shutil.rmtree(tmp_path / "deep")


def test_check_rehashes_the_episode_file_instead_of_trusting_run_json(tmp_path):
    from fewshot_bench.episodes import EpisodeSpec, sample_episodes, save_episodes

    labels = np.repeat(np.arange(10), 20)
    spec = EpisodeSpec("emoji", "test", 5, 1, 15, 30, 0)
    es = sample_episodes(labels, spec, "fake")
    file = save_episodes(es, tmp_path / "eps")
    acc = {"ce": accuracies(30, 0.6, 1)}
    run, baseline = _pair(tmp_path, acc, acc)
    for r in (run, tmp_path / "base"):
        record = json.loads((r / "run.json").read_text())
        record["episodes"].update(file=str(file), content_hash=es.content_hash)
        (r / "run.json").write_text(json.dumps(record))
    create_baseline(tmp_path / "base", baseline)
    assert check_run(run, baseline).passed
    # other episodes (a consistent file) under the same name: not what the run scored
    other = sample_episodes(labels, EpisodeSpec("emoji", "test", 5, 1, 15, 30, 1), "fake")
    save_episodes(other, tmp_path / "other").rename(file)
    result = invoke(["check", str(run), "--baseline", str(baseline)])
    assert result.exit_code == 2, explain(result)
    assert str(file) in result.stderr and "cannot be trusted" in result.stderr
    file.write_bytes(file.read_bytes()[:100])  # damaged
    with pytest.raises(BenchError, match="which is damaged"):
        check_run(run, baseline)
