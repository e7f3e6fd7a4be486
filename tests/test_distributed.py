"""Scale-out: `bench run` under torchrun with 2 CPU processes (gloo) gives the per-episode
results and summary of a single-process run, also as two "machines" (two torchrun launchers
with --nnodes=2), and resumes a stopped run like one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_bench import distributed, runner
from fewshot_bench.config import RunConfig
from fewshot_bench.data import create_dataset
from fewshot_bench.episodes import EpisodeSpec, sample_episodes
from fewshot_bench.errors import BenchError

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


def test_run_json_records_the_processes(runs):
    tmp, _, _ = runs
    one = json.loads((tmp / "one" / "run.json").read_text())
    two = json.loads((tmp / "two" / "run.json").read_text())
    assert one["distributed"] is None and one["episode_batch"] == 2
    assert two["distributed"]["world_size"] == 2 and two["distributed"]["backend"] == "gloo"
    ranks = two["distributed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["host"] == socket.gethostname() and r["device"] == "cpu"
               and r["torch_threads"] == 1 for r in ranks)
    assert two["episode_batch"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_with_their_own_folders_match_one_process(runs):
    """Multi-node through torchrun's usual flags (--nnodes, --node_rank, --master_addr/port),
    two launchers standing in for two machines that share no folder: node 0 has the episode
    file, node 1 an empty --episodes-dir. Rank 0 sends the episodes, so node 1 needs only the
    data set, writes nothing, and the results are those of one process."""
    tmp, _, _ = runs
    node0, node1 = tmp / "node0", tmp / "node1"
    shutil.copytree(tmp / "episodes", node0 / "episodes")
    (node1 / "episodes").mkdir(parents=True)
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={r}",
         "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
         "-m", "fewshot_bench.cli", *OPTIONS, "--episodes-dir", str(node / "episodes"),
         "--out", str(node / "run")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r, node in enumerate((node0, node1))]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    assert _rows(node0 / "run") == _rows(tmp / "one")
    assert (node0 / "run" / "summary.csv").read_text() == (tmp / "one" / "summary.csv").read_text()
    assert sorted(p.name for p in node1.rglob("*")) == ["episodes"]  # nothing written there
    record = json.loads((node0 / "run" / "run.json").read_text())
    assert [r["rank"] for r in record["distributed"]["ranks"]] == [0, 1]


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


def test_finished_run_resumed_for_embeddings_under_torchrun(runs):
    """Nothing left to fine-tune, only the embeddings to save: rank 0 does that alone and
    the other rank, with no windows, must not be waited for."""
    tmp, _, _ = runs
    done = tmp / "embeddings"
    shutil.copytree(tmp / "one", done)
    proc = _bench([*OPTIONS, "--episodes-dir", str(tmp / "episodes"), "--out", str(done),
                   "--embeddings", "2"], nproc=2)
    assert "0 to go" in proc.stderr + proc.stdout
    assert (done / "embeddings.npz").is_file()
    assert _rows(done) == _rows(tmp / "one")


def test_shard_is_round_robin_and_plain_without_torchrun(monkeypatch):
    assert not distributed.active()
    assert distributed.shard(5) == [0, 1, 2, 3, 4]
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_gather(3) == [3]
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(5) == [1, 3, None]


def test_ranks_agree_on_the_smallest_episode_group(monkeypatch):
    cfg, bank = RunConfig(), None
    monkeypatch.setattr(runner, "episode_batch_size", lambda cfg, bank: 5)
    assert runner.agreed_episode_batch(cfg, bank) == 5  # one process: its own choice
    assert runner.agreed_episode_batch(cfg, bank, fixed=7) == 7  # --episode-batch or resume
    # another rank (say a GPU with less free memory) can hold only 3: every rank uses 3
    monkeypatch.setattr(distributed, "all_gather", lambda obj: [obj, 3])
    assert runner.agreed_episode_batch(cfg, bank) == 3


def test_a_rank_whose_data_differs_is_refused():
    data = create_dataset("emoji", "test", None)
    spec = EpisodeSpec("emoji", "test", 5, 1, 3, 4, 0)
    ok = sample_episodes(data.labels, spec, data.fingerprint())
    runner._check_same_data(RunConfig(), data, ok, data.fingerprint())  # the same data: no error
    other = sample_episodes(data.labels, spec, "0123456789abcdef")
    with pytest.raises(BenchError, match=r"(?s)rank 0 on .* differs from rank 0's.*--data-root"):
        runner._check_same_data(RunConfig(), data, other, data.fingerprint())


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
