"""Run folders: torn-line recovery, resume checks, resume equals an uninterrupted run,
--fail-fast, and a real `bench run` killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fewshot_bench import runner as runner_module
from fewshot_bench.cli import main
from fewshot_bench.config import RunConfig
from fewshot_bench.errors import BenchError
from fewshot_bench.results import check_output_dir, read_rows

ROW = {"episode": 0, "method": "ce", "accuracy": 0.5}


def _rows_without_time(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")  # wall time is the one thing two runs cannot share
    return rows


def test_read_rows_drops_a_torn_last_line_and_truncates(tmp_path):
    log = tmp_path / "episodes.jsonl"
    good = json.dumps(ROW) + "\n"
    log.write_text(good * 3 + '{"episode": 3, "meth')
    warnings = []
    rows = read_rows(log, warn=warnings.append)
    assert rows == [ROW] * 3
    assert len(warnings) == 1 and "incomplete last line" in warnings[0]
    assert log.read_text() == good * 3  # cut, so appending goes on cleanly


def test_read_rows_drops_a_complete_json_line_missing_its_newline(tmp_path):
    # a kill between writing the row and its newline: the row may be incomplete in
    # ways JSON cannot see (it was written in one call, but we cannot know), so drop it
    log = tmp_path / "episodes.jsonl"
    log.write_text(json.dumps(ROW) + "\n" + json.dumps(ROW))
    assert read_rows(log, warn=lambda m: None) == [ROW]


def test_read_rows_refuses_damage_before_the_last_line(tmp_path):
    log = tmp_path / "episodes.jsonl"
    log.write_text(json.dumps(ROW) + "\nGARBAGE\n" + json.dumps(ROW) + "\n")
    with pytest.raises(BenchError, match="corrupt"):
        read_rows(log)


def test_read_rows_of_a_missing_file_is_empty(tmp_path):
    assert read_rows(tmp_path / "nothing.jsonl") == []


def test_resume_with_other_settings_names_them(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    before = RunConfig(steps=50, lr=0.01, out=str(out)).to_dict()
    (out / "run.json").write_text(json.dumps({"config": before}))
    with pytest.raises(BenchError) as err:
        check_output_dir(RunConfig(steps=20, lr=0.01, tau=0.5, out=str(out)), out)
    assert "steps: 50 then, 20 now" in str(err.value) and "tau" in str(err.value)
    assert "lr" not in str(err.value)
    # where things are written may change between the start and the resume
    assert check_output_dir(RunConfig(steps=50, out=str(out), episodes_dir="elsewhere"), out)


def test_folder_with_files_but_no_run_record_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match="not a run to resume"):
        check_output_dir(RunConfig(), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unreadable_run_record_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(BenchError, match="unreadable"):
        check_output_dir(RunConfig(), tmp_path)


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_resume_after_losing_results_equals_uninterrupted_run(tmp_path, tiny):
    eps = tmp_path / "eps"
    extra = ["--episodes", "6", "--episode-batch", "2"]
    full = tmp_path / "full"
    assert _invoke(tiny.args(eps, full, *extra)).exit_code == 0
    # simulate a run stopped mid-way: only 7 complete rows and a torn one reached the disk
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "run.json").write_text((full / "run.json").read_text())
    lines = (full / "episodes.jsonl").read_text().splitlines(keepends=True)
    (cut / "episodes.jsonl").write_text("".join(lines[:7]) + lines[7][:20])
    result = _invoke(tiny.args(eps, cut, *extra))
    assert result.exit_code == 0, result.output
    assert "dropped an incomplete last line" in result.output
    assert "7 results kept, 11 to go" in result.output
    assert _rows_without_time(cut / "episodes.jsonl") == _rows_without_time(full / "episodes.jsonl")
    assert (cut / "summary.csv").read_text() == (full / "summary.csv").read_text()
    # a finished run resumed again does nothing and changes nothing
    again = _invoke(tiny.args(eps, cut, *extra))
    assert "0 to go" in again.output
    assert _rows_without_time(cut / "episodes.jsonl") == _rows_without_time(full / "episodes.jsonl")


def test_resume_keeps_the_episode_groups_of_the_stopped_run(tmp_path, tiny, monkeypatch):
    """Without --episode-batch the group comes from free memory, which can differ when the
    run resumes (a GPU's free memory does); the resume keeps the stopped run's windows."""
    eps = tmp_path / "eps"
    monkeypatch.setattr(runner_module, "episode_batch_size", lambda cfg, bank: 2)
    full = runner_module.run(tiny.config(eps, tmp_path / "full", episodes=6), progress=False,
                             echo=lambda m: None)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "run.json").write_text((full.out_dir / "run.json").read_text())
    lines = (full.out_dir / "episodes.jsonl").read_text().splitlines(keepends=True)
    (cut / "episodes.jsonl").write_text("".join(lines[:7]))
    monkeypatch.setattr(runner_module, "episode_batch_size", lambda cfg, bank: 4)  # now
    runner_module.run(tiny.config(eps, cut, episodes=6), progress=False, echo=lambda m: None)
    assert json.loads((cut / "run.json").read_text())["episode_batch"] == 2
    assert _rows_without_time(cut / "episodes.jsonl") == _rows_without_time(
        full.out_dir / "episodes.jsonl")


def test_resume_into_a_run_of_other_settings_is_refused_and_leaves_it_alone(tmp_path, tiny):
    eps, out = tmp_path / "eps", tmp_path / "run"
    assert _invoke(tiny.args(eps, out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = CliRunner().invoke(main, tiny.args(eps, out, "--lambda", "0.5"))
    assert result.exit_code == 2
    assert "lam: 0.9 then, 0.5 now" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _nan_engine(monkeypatch, method: str, episode: int):
    """Make one (episode, method) diverge: its fine-tuning reports a non-finite loss."""
    original = runner_module.EpisodeFinetuner.finetune

    def finetune(self, support, query, episode_ids, seed, cfg, **kw):
        r = original(self, support, query, episode_ids, seed, cfg, **kw)
        if (cfg.lam > 0) == (method == "schane"):
            for i, e in enumerate(episode_ids):
                if e == episode:
                    r.failed[i], r.accuracy[i] = True, np.nan
                    r.reason[i] = "non-finite loss during fine-tuning"
        return r

    monkeypatch.setattr(runner_module.EpisodeFinetuner, "finetune", finetune)


def test_a_failed_episode_is_recorded_and_the_run_goes_on(tmp_path, tiny, monkeypatch):
    _nan_engine(monkeypatch, "schane", 1)
    out = tmp_path / "run"
    result = _invoke(tiny.args(tmp_path / "eps", out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["episode"], r["method"]) for r in failed] == [(1, "schane")]
    assert failed[0]["accuracy"] is None and "non-finite" in failed[0]["reason"]
    assert "1 failed" in result.output  # the summary says accuracy excludes it
    summary = (out / "summary.csv").read_text()
    assert "schane" in summary


def test_fail_fast_stops_with_status_1_and_keeps_results(tmp_path, tiny, monkeypatch):
    _nan_engine(monkeypatch, "ce", 0)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, tiny.args(tmp_path / "eps", out, "--fail-fast",
                                                "--episode-batch", "1"))
    assert result.exit_code == 1
    assert "episode 0 with ce failed" in result.output and "Traceback" not in result.output
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert {r["episode"] for r in rows} == {0}  # stopped after the first group


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path, tiny):
    """Kill a real `bench run` process with SIGKILL while it writes, resume it, and compare
    with an uninterrupted run of the same command."""
    eps = tmp_path / "eps"
    extra = ["--episodes", "16", "--episode-batch", "1", "--steps", "3"]
    full = tmp_path / "full"
    assert _invoke(tiny.args(eps, full, *extra)).exit_code == 0

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fewshot_bench.cli", *tiny.args(eps, killed, *extra)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "episodes.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 12:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = log.read_text().count("\n")
    assert 12 <= n_before < 48
    result = _invoke(tiny.args(eps, killed, *extra))
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert _rows_without_time(killed / "episodes.jsonl") == _rows_without_time(full / "episodes.jsonl")
    assert (killed / "summary.csv").read_text() == (full / "summary.csv").read_text()
