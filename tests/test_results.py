"""Run folders: torn-line recovery, resume checks, resume equals an uninterrupted run,
--fail-fast, and a real `bench run` killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import re
import shutil
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
from fewshot_bench.results import check_output_dir, read_record, read_rows

ROW = {"episode": 0, "method": "ce", "accuracy": 0.5}


def _rows_without_time(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds")  # wall time is the one thing two runs cannot share
    return rows


def _rows(n: int) -> list[dict]:
    return [{**ROW, "episode": e} for e in range(n)]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_read_rows_drops_a_torn_last_line_and_truncates(tmp_path):
    log = tmp_path / "episodes.jsonl"
    good = _jsonl(_rows(3))
    log.write_text(good + '{"episode": 3, "meth')
    warnings = []
    rows = read_rows(log, warn=warnings.append)
    assert rows == _rows(3)
    assert len(warnings) == 1 and "incomplete last line" in warnings[0]
    assert log.read_text() == good  # cut, so appending goes on cleanly


def test_read_rows_without_repair_leaves_the_file_alone(tmp_path):
    # readers (bench report) must not cut the line a running run is writing
    log = tmp_path / "episodes.jsonl"
    log.write_text(_jsonl(_rows(2)) + '{"episode": 2, "meth')
    before = log.read_bytes()
    assert read_rows(log, warn=lambda m: None, repair=False) == _rows(2)
    assert log.read_bytes() == before


BAD_ROWS = {  # a second line -> words of the message
    "a list": ("[1]", "is a list, not a result row"),
    "a number": ("5", "is a number, not a result row"),
    "no episode": ('{"method": "ce", "accuracy": 0.5}', "lacks 'episode'"),
    "accuracy a string": ('{"episode": 1, "method": "ce", "accuracy": "x"}', "accuracy 'x'"),
    "accuracy in percent": ('{"episode": 1, "method": "ce", "accuracy": 50}', "accuracy 50"),
    "ok without accuracy": ('{"episode": 1, "method": "ce", "accuracy": null}', "accuracy None"),
    "unknown status": ('{"episode": 1, "method": "ce", "accuracy": 0.5, "status": "meh"}',
                       "status 'meh' is unknown"),
    "episode a float": ('{"episode": 1.0, "method": "ce", "accuracy": 0.5}', "episode 1.0"),
    "episode negative": ('{"episode": -1, "method": "ce", "accuracy": 0.5}', "episode -1"),
    "episode out of range": ('{"episode": 99, "method": "ce", "accuracy": 0.5}', "out of range"),
    "method a number": ('{"episode": 1, "method": 3, "accuracy": 0.5}', "method 3"),
    "duplicate": (json.dumps(ROW), "repeats episode 0 of ce from line 1"),
    "bad utf-8": ('\udcff{"episode": 1}', "is corrupt: line 2"),
}


@pytest.mark.parametrize("line, words", list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_read_rows_refuses_a_bad_row_naming_file_and_line(tmp_path, line, words):
    log = tmp_path / "episodes.jsonl"
    text = json.dumps(ROW) + "\n" + line + "\n" + json.dumps({**ROW, "episode": 2}) + "\n"
    log.write_bytes(text.encode("utf-8", "surrogateescape"))  # \udcff -> the byte 0xff
    with pytest.raises(BenchError) as info:
        read_rows(log, episodes=4)
    message = str(info.value)
    assert words in message and str(log) in message and "line 2" in message, message
    assert "Delete that line" in message and "\n" not in message
    assert log.read_bytes() == text.encode("utf-8", "surrogateescape")


def test_read_rows_accepts_a_failed_row_without_accuracy(tmp_path):
    log = tmp_path / "episodes.jsonl"
    failed = {"episode": 0, "method": "ce", "accuracy": None, "status": "failed"}
    log.write_text(_jsonl([failed]))
    assert read_rows(log, episodes=1) == [failed]


def test_read_rows_of_a_folder_is_refused(tmp_path):
    (tmp_path / "episodes.jsonl").mkdir()
    with pytest.raises(BenchError, match="Cannot read"):
        read_rows(tmp_path / "episodes.jsonl")


BAD_RECORDS = {  # run.json -> words of the message
    "null": (None, "holds null, not a JSON object"),
    "a list": ([], "holds a list"),
    "no config": ({"config": ...}, "has no 'config'"),  # ...: the field is left out
    "config a list": ({"config": []}, "'config' is a list, not an object"),
    "episodes a list": ({"episodes": []}, "'episodes' is a list"),
    "hardware a string": ({"hardware": "x"}, "'hardware' is a string"),
    "resumed a number": ({"resumed": 5}, "'resumed' is a number, not a list"),
    "episode_batch negative": ({"episode_batch": -2}, "episode_batch is -2"),
    "episode_batch a string": ({"episode_batch": "4"}, "episode_batch is '4'"),
    "episode_batch a float": ({"episode_batch": 2.5}, "episode_batch is 2.5"),
    "old episode_batch negative": ({"timing": {"episode_batch": -1}}, "timing.episode_batch"),
    "config.episodes a string": ({"config": {"episodes": "4"}}, "config.episodes is '4'"),
}


@pytest.mark.parametrize("change, words", list(BAD_RECORDS.values()), ids=list(BAD_RECORDS))
def test_read_record_refuses_fields_of_the_wrong_shape(tmp_path, change, words):
    record = {"config": RunConfig(episodes=4).to_dict(), "episode_batch": 2,
              "timing": {"episode_batch": 2}}
    if isinstance(change, dict):
        record = {k: v for k, v in {**record, **change}.items() if v is not ...}
    else:
        record = change
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(BenchError) as info:
        read_record(tmp_path / "run.json")
    assert words in str(info.value) and "damaged" in str(info.value), str(info.value)
    with pytest.raises(BenchError, match=re.escape(words)):  # a resume reads it so
        check_output_dir(RunConfig(episodes=4), tmp_path)


def test_read_rows_drops_a_complete_json_line_missing_its_newline(tmp_path):
    # a kill between writing the row and its newline: the row may be incomplete in
    # ways JSON cannot see (it was written in one call, but we cannot know), so drop it
    log = tmp_path / "episodes.jsonl"
    log.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "episode": 1}))
    assert read_rows(log, warn=lambda m: None) == [ROW]


def test_read_rows_refuses_damage_before_the_last_line(tmp_path):
    log = tmp_path / "episodes.jsonl"
    log.write_text(json.dumps(ROW) + "\nGARBAGE\n" + json.dumps({**ROW, "episode": 1}) + "\n")
    with pytest.raises(BenchError, match="corrupt"):
        read_rows(log)


def test_read_rows_of_a_missing_file_is_empty(tmp_path):
    assert read_rows(tmp_path / "nothing.jsonl") == []


def test_resume_with_other_settings_names_them(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    before = RunConfig(steps=50, lr=0.01, out=str(out)).to_dict()
    (out / "run.json").write_text(json.dumps({"config": before}))
    (out / "episodes.jsonl").write_text(_jsonl([ROW]))  # a result (else it is replaced)
    with pytest.raises(BenchError) as err:
        check_output_dir(RunConfig(steps=20, lr=0.01, tau=0.25, out=str(out)), out)
    assert "steps: 50 then, 20 now" in str(err.value) and "tau" in str(err.value)
    assert "lr" not in str(err.value)
    # where things are written may change between the start and the resume
    assert check_output_dir(RunConfig(steps=50, lr=0.01, out=str(out), episodes_dir="elsewhere"), out)


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


# --------------------------------------------------------------------------------------
# A damaged run folder is refused on resume and left exactly as it was
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """One finished tiny run, copied by each test below before damaging it."""
    work = tmp_path_factory.mktemp("finished")
    result = _invoke(tiny.args(work / "eps", work / "run"))
    assert result.exit_code == 0, result.output
    return work


def _append(line: str):
    def damage(run: Path) -> None:
        with open(run / "episodes.jsonl", "a") as f:
            f.write(line + "\n")
    return damage


def _edit_record(**changes):
    def damage(run: Path) -> None:
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**record, **changes}, indent=2))
    return damage


def _first_row(**changes):
    def damage(run: Path) -> None:
        lines = (run / "episodes.jsonl").read_text().splitlines()
        lines[0] = json.dumps({**json.loads(lines[0]), **changes})
        (run / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return damage


DAMAGES = {
    "accuracy a string": _first_row(accuracy="x"),
    "unknown status": _first_row(status="meh"),
    "duplicate row": lambda run: _append((run / "episodes.jsonl").read_text().splitlines()[0])(run),
    "out-of-range episode": _append('{"episode": 99, "method": "ce", "accuracy": 0.5}'),
    "a list row": _append("[1]"),
    "a number row": _append("5"),
    "row without episode": _append('{"method": "ce", "accuracy": 0.5}'),
    "episode_batch negative": _edit_record(episode_batch=-1),
    "episode_batch a string": _edit_record(episode_batch="x"),
    "config a list": _edit_record(config=[]),
    "episodes a list": _edit_record(episodes=[]),
    "hardware a string": _edit_record(hardware="x"),
    "resumed a number": _edit_record(resumed=5),
}


@pytest.mark.parametrize("damage", list(DAMAGES.values()), ids=list(DAMAGES))
def test_resume_of_a_damaged_run_exits_2_and_changes_nothing(finished, tiny, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    damage(run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = CliRunner().invoke(main, tiny.args(finished / "eps", run))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stderr.startswith("error: ") and "\n" not in result.stderr.strip()
    assert str(run) in result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # run.json kept whole


def test_a_hand_edited_result_row_is_refused_on_resume_naming_its_line(finished, tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    lines = (run / "episodes.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    assert row["check"]  # every row carries its checksum
    row["accuracy"] = 1.0 if row["accuracy"] != 1.0 else 0.0  # still a valid accuracy
    lines[1] = json.dumps(row)
    (run / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = CliRunner().invoke(main, tiny.args(finished / "eps", run))
    assert result.exit_code == 2, result.output
    assert "episodes.jsonl line 2 is damaged: it was edited" in result.stderr, result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # rows written before checksums existed have none, and are accepted as they are
    lines[1] = json.dumps({k: v for k, v in row.items() if k != "check"})
    (run / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    assert len(read_rows(run / "episodes.jsonl")) == len(lines)
