"""--eval-steps: the accuracy after fewer steps, recorded per episode by one run."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from fewshot_bench.cli import main
from fewshot_bench.config import RunConfig
from fewshot_bench.errors import BenchError
from fewshot_bench.runner import run


@pytest.fixture(scope="module")
def curve_run(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("eval-steps")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        cfg = tiny.config(work / "ep", work / "long", methods=("protonet", "ce", "schane"),
                          steps=4, lr=0.05, eval_steps="0,2")
        long = run(cfg.validate(), progress=False, echo=lambda m: None)
        shorts = {s: run(replace(cfg, steps=s, eval_steps=(), out=str(work / f"s{s}")).validate(),
                         progress=False, echo=lambda m: None) for s in (0, 2)}
    return cfg, long, shorts


def test_rows_record_the_accuracy_after_each_eval_step(curve_run):
    cfg, long, shorts = curve_run
    assert cfg.eval_steps == (0, 2)
    rows = long.rows
    trained = rows[rows["method"] != "protonet"]
    assert all(set(d) == {"0", "2"} for d in trained["accuracy_at_steps"])
    assert rows.loc[rows["method"] == "protonet", "accuracy_at_steps"].isna().all()
    for s, short in shorts.items():  # a run of s steps gives the same accuracies
        got = trained.set_index(["episode", "method"])["accuracy_at_steps"].map(lambda d: d[str(s)])
        want = short.rows[short.rows["method"] != "protonet"].set_index(["episode", "method"])["accuracy"]
        pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    # step 0 is the prototype-initialised head: ProtoNet's accuracy
    proto = rows[rows["method"] == "protonet"].set_index("episode")["accuracy"]
    at0 = trained[trained["method"] == "ce"].set_index("episode")["accuracy_at_steps"].map(
        lambda d: d["0"])
    pd.testing.assert_series_equal(at0, proto, check_names=False)


def test_steps_table_in_the_summary_and_csv(curve_run):
    cfg, long, _ = curve_run
    table = pd.read_csv(long.out_dir / "steps.csv")
    assert list(table["steps"]) == [0, 2, 0, 2] and set(table["method"]) == {"ce", "schane"}
    ce = long.rows[long.rows["method"] == "ce"]
    mean2 = 100 * np.mean([d["2"] for d in ce["accuracy_at_steps"]])
    assert table.loc[(table["method"] == "ce") & (table["steps"] == 2), "mean"].item() == pytest.approx(mean2)
    assert "accuracy % after steps" in long.text
    assert "accuracy % after steps" in (long.out_dir / "summary.md").read_text()
    assert json.loads((long.out_dir / "run.json").read_text())["config"]["eval_steps"] == [0, 2]


def test_resume_keeps_the_eval_steps(curve_run, tiny):
    """A stopped run resumes with the same --eval-steps and refuses other ones."""
    cfg, long, _ = curve_run
    log = long.out_dir / "episodes.jsonl"
    full = log.read_text()
    log.write_text("".join(full.splitlines(keepends=True)[:3]))
    again = run(cfg.validate(), progress=False, echo=lambda m: None)
    pd.testing.assert_frame_equal(again.rows.drop(columns="seconds"),
                                  long.rows.drop(columns="seconds"))
    log.write_text("".join(full.splitlines(keepends=True)[:3]))
    with pytest.raises(BenchError, match="eval_steps"):
        run(replace(cfg, eval_steps=(1,)).validate(), progress=False, echo=lambda m: None)


@pytest.mark.parametrize("kw,match", [
    ({"steps": 3, "eval_steps": (5,)}, "between 0 and --steps"),
    ({"steps": 3, "eval_steps": "-1"}, "between 0 and --steps"),
    ({"eval_steps": "2,x"}, "comma list"),
    ({"eval_steps": (2,), "methods": ("protonet", "logreg")}, "trains nothing"),
])
def test_bad_eval_steps_are_refused(kw, match):
    with pytest.raises(BenchError, match=match):
        RunConfig(**kw).validate()


def test_eval_steps_flag(tmp_path):
    res = CliRunner().invoke(main, ["run", "--steps", "3", "--eval-steps", "1,9",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "between 0 and --steps (3)" in res.output
    assert not (tmp_path / "o").exists()
    assert RunConfig(eval_steps="5, 1,5").validate().eval_steps == (1, 5)
