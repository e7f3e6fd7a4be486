"""Scale-out: `bench run` under torchrun with 2 CPU processes (gloo) gives the per-episode
results and summary of a single-process run, and resumes a stopped run like one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_bench import distributed

OPTIONS = ["run", "--no-progress", "--device", "cpu", "--episodes", "8", "--episode-batch", "2",
           "--steps", "2", "--bank-views", "2", "--image-size", "32", "--queries", "3"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def _bench(args: list[str], nproc: int | None = None) -> subprocess.CompletedProcess:
    if nproc is None:
        cmd = [sys.executable, "-m", "fewshot_bench.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "fewshot_bench.cli", *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _rows(out: Path) -> list[dict]:
    lines = (out / "episodes.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    eps = tmp / "episodes"
    one = _bench([*OPTIONS, "--episodes-dir", str(eps), "--out", str(tmp / "one")])
    two = _bench([*OPTIONS, "--episodes-dir", str(eps), "--out", str(tmp / "two")], nproc=2)
    return tmp, one, two


def test_two_processes_match_one_process(runs):
    tmp, _, _ = runs
    one, two = tmp / "one", tmp / "two"
    assert len(_rows(one)) == 8 * 3
    assert _rows(two) == _rows(one)
    assert (two / "summary.csv").read_text() == (one / "summary.csv").read_text()
    assert (two / "paired.csv").read_text() == (one / "paired.csv").read_text()


def test_only_rank_zero_prints(runs):
    _, one, two = runs
    summary = one.stdout.split("\n\n8 episodes")[0]
    assert two.stdout.count(summary) == 1
    assert two.stdout.count("results in") == 1


def test_resume_under_torchrun_matches(runs):
    tmp, _, _ = runs
    stopped = tmp / "stopped"
    _bench([*OPTIONS, "--episodes-dir", str(tmp / "episodes"), "--out", str(stopped)])
    # keep the first 5 rows (part of a window) and drop the summaries: a stopped run
    log = stopped / "episodes.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:5]))
    for name in ("summary.csv", "paired.csv", "summary.md"):
        (stopped / name).unlink()
    proc = _bench([*OPTIONS, "--episodes-dir", str(tmp / "episodes"), "--out", str(stopped)],
                  nproc=2)
    assert "resuming: 5 results kept, 19 to go" in proc.stderr
    assert _rows(stopped) == _rows(tmp / "one")
    assert (stopped / "summary.csv").read_text() == (tmp / "one" / "summary.csv").read_text()


def test_shard_is_round_robin_and_plain_without_torchrun(monkeypatch):
    assert not distributed.active()
    assert distributed.shard(5) == [0, 1, 2, 3, 4]
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_gather(3) == [3]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(5) == [1, 3, None]


def test_bad_input_under_torchrun_stops_every_rank_quietly(tmp_path):
    """Rank 0 refuses the --out (a path under a file) before any work: the other rank is
    told at once and stops with a one-line error too (exit 2), instead of failing in its
    collective with a connection error and a traceback."""
    (tmp_path / "afile").write_text("")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "fewshot_bench.cli", *OPTIONS, "--episodes-dir", str(tmp_path / "eps"),
           "--out", str(tmp_path / "afile" / "run")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    # torchrun's own launcher prints its ChildFailedError; the ranks print one line each
    assert "[rank0]: Traceback" not in output and "[rank1]: Traceback" not in output, output
    assert "error: Cannot write to the results folder" in output
    assert "rank 1 stopped because rank 0 did" in output
    assert "exitcode  : 2" in output  # both ranks: bad input
