"""runner.run and its helpers, called as a notebook would (no CLI)."""

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from fewshot_bench.runner import (
    RunResult,
    comparison_pairs,
    environment_record,
    method_config,
    run,
    summarise,
    write_atomic,
)


@pytest.fixture(scope="module")
def tiny_result(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("runner")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        cfg = tiny.config(work / "episodes", work / "out")
        messages = []
        result = run(cfg, progress=False, echo=messages.append)
    return cfg, result, messages


def test_run_returns_a_row_for_every_episode_and_method(tiny_result):
    cfg, result, messages = tiny_result
    assert isinstance(result, RunResult)
    rows = result.rows
    assert len(rows) == cfg.episodes * len(cfg.methods)
    pairs = set(zip(rows["episode"], rows["method"]))
    assert pairs == {(e, m) for e in range(cfg.episodes) for m in cfg.methods}
    assert (rows["status"] == "ok").all()
    assert rows["accuracy"].between(0, 1).all()
    # protonet does not train: no losses; trained methods have both
    proto = rows[rows["method"] == "protonet"]
    assert proto["loss_before"].isna().all() and proto["loss_after"].isna().all()
    trained = rows[rows["method"] != "protonet"]
    assert trained["loss_before"].notna().all() and trained["loss_after"].notna().all()
    assert result.out_dir.is_dir()
    assert messages and "episodes" in messages[0]


def test_rows_match_the_episode_log(tiny_result):
    _, result, _ = tiny_result
    logged = [json.loads(line) for line in
              (result.out_dir / "episodes.jsonl").read_text().splitlines()]
    pd.testing.assert_frame_equal(pd.DataFrame(logged), result.rows)


def test_summary_mean_equals_mean_of_rows(tiny_result):
    cfg, result, _ = tiny_result
    table = result.method_table.set_index("method")
    assert list(table.index) == list(cfg.methods)
    by_rows = result.rows.groupby("method")["accuracy"].mean() * 100
    for m in cfg.methods:
        assert table.loc[m, "mean"] == pytest.approx(by_rows[m], abs=1e-9)
        assert table.loc[m, "n"] == cfg.episodes
        assert table.loc[m, "failed"] == 0
    # the CSV on disk holds the same table
    csv = pd.read_csv(result.out_dir / "summary.csv").set_index("method")
    np.testing.assert_allclose(csv.loc[list(cfg.methods), "mean"], table["mean"])


def test_paired_table_puts_schane_minus_ce_first(tiny_result):
    cfg, result, _ = tiny_result
    paired = result.paired_table
    assert list(zip(paired["a"], paired["b"]))[0] == ("ce", "schane")
    ce = result.rows[result.rows.method == "ce"].set_index("episode")["accuracy"]
    sc = result.rows[result.rows.method == "schane"].set_index("episode")["accuracy"]
    assert paired.iloc[0]["mean_diff"] == pytest.approx(100 * (sc - ce).mean(), abs=1e-6)
    assert "schane - ce" in result.text


def test_comparison_pairs_order():
    assert comparison_pairs(("protonet", "ce", "schane")) == [
        ("ce", "schane"), ("protonet", "ce"), ("protonet", "schane")]
    assert comparison_pairs(("schane", "ce", "protonet"))[0] == ("ce", "schane")
    assert comparison_pairs(("ce", "schane")) == [("ce", "schane")]
    assert comparison_pairs(("ce",)) == []
    assert comparison_pairs(("protonet",)) == []
    assert comparison_pairs(("protonet", "schane")) == [("protonet", "schane")]


def test_summarise_single_method_has_no_pairs():
    rows = pd.DataFrame({"episode": [0, 1], "method": ["ce", "ce"], "accuracy": [0.2, 0.4],
                         "status": ["ok", "ok"]})
    table, paired = summarise(rows, ("ce",))
    assert table.loc[0, "mean"] == pytest.approx(30.0)
    assert paired.empty


def test_summarise_survives_a_method_whose_episodes_all_failed():
    """A method can fail every episode (non-finite loss); the run must still summarise
    (and report the failures) instead of dying after its results were written."""
    rows = pd.DataFrame({
        "episode": [0, 1, 0, 1], "method": ["ce", "ce", "schane", "schane"],
        "accuracy": [0.2, 0.4, None, None], "status": ["ok", "ok", "failed", "failed"],
    })
    table, _ = summarise(rows, ("ce", "schane"))
    assert table.set_index("method").loc["schane", "failed"] == 2


def test_write_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "summary.md"
    write_atomic(target, "first\n")
    write_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_run_folder_has_no_temp_files(tiny_result):
    _, result, _ = tiny_result
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")], names


def test_environment_record_has_versions():
    rec = environment_record(torch.device("cpu"))
    versions = rec["versions"]
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["timm"] == timm.__version__
    assert versions["python"]
    assert rec["hardware"]["device"] == "cpu"
    assert rec["hardware"]["cuda"] is None
    assert set(rec["git"]) == {"commit", "dirty"}
    json.dumps(rec)  # stored in run.json


def test_comparison_pairs_with_the_ablations():
    methods = ("protonet", "ce", "hcl", "supcon", "schane")
    pairs = comparison_pairs(methods)
    assert pairs[:3] == [("ce", "schane"), ("ce", "hcl"), ("ce", "supcon")]
    assert pairs[3:] == [("protonet", m) for m in ("ce", "hcl", "supcon", "schane")]


def test_ablation_methods_run_on_the_same_episodes(tiny, tmp_path, monkeypatch):
    """supcon and hcl run through the same engine and episodes; their losses differ from
    SCHaNe's and CE's, so the recorded training losses do too."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny.config(tmp_path / "episodes", tmp_path / "out",
                      methods=("ce", "schane", "supcon", "hcl"))
    result = run(cfg, progress=False, echo=lambda m: None)
    rows = result.rows
    assert set(rows["method"]) == {"ce", "schane", "supcon", "hcl"}
    assert (rows.groupby("method")["episode"].apply(sorted).apply(tuple).nunique()) == 1
    before = rows.pivot(index="episode", columns="method", values="loss_before")
    for m in ("schane", "supcon", "hcl"):
        assert not np.allclose(before[m], before["ce"])
    assert not np.allclose(before["supcon"], before["schane"])
    assert list(result.paired_table["b"])[:3] == ["schane", "supcon", "hcl"]


def test_hcl_needs_two_views_even_at_five_shots():
    from fewshot_bench.config import RunConfig
    from fewshot_bench.errors import BenchError

    RunConfig(methods=("ce", "supcon"), shots=5, views=1).validate()  # label positives exist
    with pytest.raises(BenchError, match="hcl"):
        RunConfig(methods=("ce", "hcl"), shots=5, views=1).validate()


def test_schane_detached_and_linear_probe_in_one_run(tiny, tmp_path, monkeypatch):
    """schane-detached is SCHaNe with detached hard-negative weights (same loss value at
    step 0, different gradient); linear-probe trains a head on frozen features. Both run
    next to the others on the same episodes and get their own pairs."""
    monkeypatch.chdir(tmp_path)
    methods = ("protonet", "linear-probe", "ce", "schane", "schane-detached")
    cfg = tiny.config(tmp_path / "episodes", tmp_path / "out", methods=methods, steps=4)
    result = run(cfg, progress=False, echo=lambda m: None)
    rows = result.rows
    assert set(rows["method"]) == set(methods) and (rows["status"] == "ok").all()
    before = rows.pivot(index="episode", columns="method", values="loss_before")
    after = rows.pivot(index="episode", columns="method", values="loss_after")
    np.testing.assert_allclose(before["schane-detached"], before["schane"], rtol=1e-6)
    assert not np.allclose(after["schane-detached"], after["schane"], rtol=1e-7, atol=0)
    np.testing.assert_allclose(before["linear-probe"], np.log(cfg.ways), rtol=1e-6)
    pairs = list(zip(result.paired_table["a"], result.paired_table["b"]))
    assert ("ce", "schane-detached") in pairs and ("schane", "schane-detached") in pairs
    assert ("protonet", "linear-probe") in pairs
    assert method_config(cfg, "schane-detached").detach_weights
    assert not method_config(cfg, "schane").detach_weights


def test_detach_flag_with_both_schane_variants_is_refused():
    from fewshot_bench.config import RunConfig
    from fewshot_bench.errors import BenchError

    with pytest.raises(BenchError, match="schane-detached"):
        RunConfig(methods=("schane", "schane-detached"), detach_weights=True).validate()
    with pytest.raises(BenchError, match="--tune head"):
        RunConfig(methods=("ce", "schane-detached"), tune="head").validate()
    RunConfig(methods=("linear-probe", "ce"), tune="head").validate()


def test_schane_and_schane_perpos_coincide_at_one_shot_only(tiny, tmp_path, monkeypatch):
    """The authors' form (schane) and the per-positive one (schane-perpos) are the same loss
    when each anchor has one positive (1 shot, 2 views), so a run gives identical numbers;
    at 2 shots they are different losses. Both get paired with each other."""
    monkeypatch.chdir(tmp_path)
    methods = ("ce", "schane", "schane-perpos")
    one = run(tiny.config(tmp_path / "ep", tmp_path / "one", methods=methods, steps=3),
              progress=False, echo=lambda m: None)
    r = one.rows.pivot(index="episode", columns="method", values="loss_after")
    np.testing.assert_allclose(r["schane"], r["schane-perpos"], rtol=1e-5)
    assert ("schane-perpos", "schane") in list(zip(one.paired_table["a"], one.paired_table["b"]))
    two = run(tiny.config(tmp_path / "ep", tmp_path / "two", methods=methods, steps=3, shots=2),
              progress=False, echo=lambda m: None)
    before = two.rows.pivot(index="episode", columns="method", values="loss_before")
    assert (before["schane"] < before["schane-perpos"] - 1e-4).all()
    record = json.loads((two.out_dir / "run.json").read_text())
    assert record["config"]["schane_form"] == "authors"


def test_a_run_from_before_the_switch_is_not_resumed(tiny, tmp_path, monkeypatch):
    """Runs recorded before `schane` became the authors' loss lack schane_form; resuming one
    would mix two losses under one name, so it is refused with the reason."""
    from fewshot_bench.errors import BenchError

    monkeypatch.chdir(tmp_path)
    cfg = tiny.config(tmp_path / "ep", tmp_path / "old", methods=("ce", "schane"), episodes=2)
    res = run(cfg, progress=False, echo=lambda m: None)
    path = res.out_dir / "run.json"
    record = json.loads(path.read_text())
    del record["config"]["schane_form"]
    path.write_text(json.dumps(record))
    log = res.out_dir / "episodes.jsonl"
    log.write_text(log.read_text().splitlines()[0] + "\n")  # unfinished
    with pytest.raises(BenchError, match="per-positive form then"):
        run(cfg, progress=False, echo=lambda m: None)
