"""Issue 17, reliability at the edges: one command per output folder, overflowing
hyperparameters, non-finite embeddings, refused commands that write nothing, episode file
names, `bench check` re-hashing the episode file, hand-edited result rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli_helpers import explain, invoke
from fewshot_bench.fileio import LOCK, folder_lock
from fewshot_bench.results import check_output_dir

FT_TINY = ["--image-size", "32", "--steps", "3", "--batch-size", "8", "--device", "cpu",
           "--no-progress"]


def assert_refused(result, *words: str) -> None:
    assert result.exit_code == 2, explain(result)
    assert "Traceback" not in result.output, explain(result)
    message = result.stderr.strip().splitlines()[-1]  # after any progress lines
    assert message.startswith("error:"), message
    for w in words:
        assert w in message, message


def _stopped_run(tiny, tmp_path: Path) -> Path:
    """A run folder as `bench run` leaves it when stopped: run.json and one result row."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = tiny.config(tmp_path / "eps", out).validate()
    (out / "run.json").write_text(json.dumps({"config": cfg.to_dict()}))
    (out / "episodes.jsonl").write_text(json.dumps(
        {"episode": 0, "method": "ce", "accuracy": 0.5, "status": "ok", "reason": ""}) + "\n")
    return out


# -- 1. two commands on one folder --------------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_pid(tiny, tmp_path):
    out = _stopped_run(tiny, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with folder_lock(out):  # as another `bench run` resuming it would hold it
        result = invoke(tiny.args(tmp_path / "eps", out), tmp_path)
    assert_refused(result, f"pid {os.getpid()}", str(out), "in use by another bench command")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing appended
    assert not (tmp_path / "eps").exists()  # refused before reading anything


def test_a_sweep_or_finetune_on_a_locked_new_folder_is_refused(tiny, tmp_path):
    for name, args in (
            ("sweep", ["sweep", *tiny.args(tmp_path / "eps", tmp_path / "sweep")[1:],
                       "--param", "lambda=0.5"]),
            ("ft", ["finetune", "--out", str(tmp_path / "ft"), *FT_TINY])):
        out = tmp_path / name
        out.mkdir()
        with folder_lock(out):
            result = invoke(args, tmp_path)
            assert sorted(os.listdir(out)) == [LOCK]  # no sweep.json, no finetune.json
        assert_refused(result, f"pid {os.getpid()}")
        assert os.listdir(out) == []  # the lock file goes with its holder


def test_a_stale_lock_file_is_not_content_and_does_not_block(tiny, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # left by a process killed with SIGKILL
    assert check_output_dir(tiny.config(tmp_path / "eps", out).validate(), out) is None
    with folder_lock(out):
        assert (out / LOCK).read_text() == f"{os.getpid()}\n"
    assert not (out / LOCK).exists()


# -- 2. a finite learning rate that overflows float32 in the optimiser --------------------


@pytest.mark.parametrize("args, words", [
    (["run", "--lr", "1e38"], "--lr 1e+38 is too large"),
    (["run", "--lr", "1e38", "--optimizer", "sgd", "--weight-decay", "1e39"],
     "--weight-decay 1e+39 is larger than the largest float32"),
    (["sweep", "--param", "lr=0.001,1e38"], "Grid point lr=1e+38: --lr 1e+38 is too large"),
    (["finetune", "--lr", "1e37"], "--lr 1e+37 is too large"),  # its head learns at 10 x lr
])
def test_an_overflowing_lr_is_refused_before_any_work(tmp_path, args, words):
    out = tmp_path / "out"
    result = invoke([*args, "--out", str(out), "--episodes-dir" if args[0] != "finetune"
                     else "--data-root", str(tmp_path / "eps")], tmp_path)
    assert_refused(result, words)
    assert not out.exists() and not (tmp_path / "eps").exists()


def test_the_largest_usable_lr_passes_validation():
    from fewshot_bench.config import RunConfig

    RunConfig(lr=3.4e37).validate()  # Adam's first step, 10 x lr, just fits
    RunConfig(lr=3.4e38, optimizer="sgd").validate()


# -- 4. a refused command writes nothing; a failed attempt is replaced --------------------


def _sweep(tiny, tmp_path: Path, *extra: str):
    args = ["sweep", *tiny.args(tmp_path / "eps", tmp_path / "sweep")[1:], "--methods",
            "schane", "--param", "lambda=0.5", "--no-figures", *extra]
    return invoke(args, tmp_path)


@pytest.mark.parametrize("extra, words", [
    (["--ways", "100"], "--ways 100 needs 100 classes"),
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--backbone", "no-such-net"], "no-such-net"),
    (["--device", "cuda"], "--device cuda"),
])
def test_a_refused_sweep_leaves_no_sweep_folder(tiny, tmp_path, extra, words):
    import torch

    if extra == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_refused(_sweep(tiny, tmp_path, *extra), words)
    assert not (tmp_path / "sweep").exists()  # so the corrected command is not refused


@pytest.mark.parametrize("extra, words", [
    (["--backbone", "no-such-net"], "no-such-net"),
    (["--weights", "{tmp}/weights.txt"], "weights.txt"),
])
def test_a_bad_backbone_or_weights_is_refused_before_the_data_loads(tiny, tmp_path, monkeypatch,
                                                                    extra, words):
    """Issue 17 (9): found before the data set is read and the episode file written (that
    took 7-45 s), not after."""
    from fewshot_bench import runner

    (tmp_path / "weights.txt").write_text("not a checkpoint\n")

    def no_data(*args, **kwargs):
        raise AssertionError("the data set was loaded before the backbone was checked")

    monkeypatch.setattr(runner, "create_dataset", no_data)
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    result = invoke(tiny.args(tmp_path / "eps", tmp_path / "out", *extra), tmp_path)
    assert_refused(result, words)
    assert not (tmp_path / "eps").exists() and not (tmp_path / "out").exists()


def test_the_corrected_sweep_runs_in_the_folder_of_a_refused_one(tiny, tmp_path):
    assert_refused(_sweep(tiny, tmp_path, "--ways", "100"))
    result = _sweep(tiny, tmp_path, "--ways", "5")
    assert result.exit_code == 0, explain(result)
    assert (tmp_path / "sweep" / "sweep.json").is_file()


def test_a_run_that_stopped_before_its_first_result_is_replaced(tiny, tmp_path):
    out = _stopped_run(tiny, tmp_path)
    other = tiny.config(tmp_path / "eps", out, lr=0.01).validate()
    with pytest.raises(Exception, match="lr: 0.001 then, 0.01 now"):
        check_output_dir(other, out)  # it holds a result: kept
    (out / "episodes.jsonl").write_text("")
    assert check_output_dir(other, out) is None  # nothing to keep: started afresh


def test_a_failed_finetune_is_replaced_by_the_corrected_command(tmp_path):
    out = tmp_path / "ft"
    failed = invoke(["finetune", "--out", str(out), "--lr", "1e30", *FT_TINY], tmp_path)
    assert failed.exit_code == 1, explain(failed)
    assert "nothing was saved" in failed.stderr and "Traceback" not in failed.output
    assert not (out / "weights.pth").exists()
    (out / ".weights.pth.x1y2.tmp").write_bytes(b"half")  # as a kill mid-save leaves it
    result = invoke(["finetune", "--out", str(out), "--lr", "1e-4", *FT_TINY], tmp_path)
    assert result.exit_code == 0, explain(result)
    assert "never finished" in result.stderr
    record = json.loads((out / "finetune.json").read_text())
    assert record["finished"] and record["config"]["lr"] == 1e-4
    assert sorted(os.listdir(out)) == ["finetune.json", "weights.pth"]  # the stale temp is gone


# -- smaller points -----------------------------------------------------------------------


def test_ctrl_c_while_the_cli_loads_is_one_line(monkeypatch, capsys):
    import builtins
    import sys

    from fewshot_bench import __main__ as entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "cli" or name.endswith(".cli"):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "fewshot_bench.cli", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry.main() == 130
    assert capsys.readouterr().err == "interrupted while starting: nothing was done.\n"


def test_an_unreadable_weights_file_gets_a_message_cut_between_words(tmp_path, monkeypatch):
    import timm

    from fewshot_bench.backbones import create_backbone
    from fewshot_bench.errors import BenchError

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    words = " ".join(f"word{i}" for i in range(80))  # a long reader error, as torch's are

    def fail(*args, **kwargs):
        raise RuntimeError(words)

    monkeypatch.setattr(timm.models, "load_state_dict", fail)
    with pytest.raises(BenchError) as err:
        create_backbone("tf_efficientnet_lite0", weights=text)
    detail = str(err.value).split("RuntimeError: ", 1)[1].split(")", 1)[0]
    kept = detail.removesuffix(" ...")
    assert kept != detail and words.startswith(kept) and words[len(kept)] == " "  # whole words


def _fsync_fails_full(monkeypatch, module):
    """The disk fills up: `module`'s os.fsync reports ENOSPC, as it does on a full disk."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module.os, "fsync", full)


def test_a_full_disk_message_names_the_free_space_and_the_space_needed(tmp_path, monkeypatch):
    """Issue 17: the message says how much the failed write needed and what is free."""
    from fewshot_bench import fileio
    from fewshot_bench.fileio import disk_full_message, write_atomic

    target = tmp_path / "summary.csv"
    target.write_text("old\n")
    _fsync_fails_full(monkeypatch, fileio)
    with pytest.raises(OSError) as err:
        write_atomic(target, "x" * 3000)
    assert err.value.space_needed == 3000 and err.value.filename == str(target)
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    message = disk_full_message(err.value)
    assert str(target) in message and "2.9 KiB" in message, message
    assert f"free on the file system of {tmp_path}" in message, message


def test_a_full_disk_while_appending_rows_names_the_log_and_the_row_bytes(tmp_path, monkeypatch):
    from fewshot_bench import results

    log = results.RowLog(tmp_path / "episodes.jsonl")
    _fsync_fails_full(monkeypatch, results)
    rows = [{"episode": 0, "method": "ce", "accuracy": 0.5}]
    with pytest.raises(OSError) as err:
        log.append(rows)
    log.close()
    assert err.value.filename == str(tmp_path / "episodes.jsonl")
    assert err.value.space_needed == len(results._lines(rows).encode())


def test_a_full_disk_is_a_message_naming_the_path_and_exit_2(tmp_path, monkeypatch):
    import errno

    from fewshot_bench import baseline

    def full(run_dir, out):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(baseline, "create_baseline", full)
    (tmp_path / "run").mkdir()  # checked at parse time (click.Path(exists=True))
    result = invoke(["baseline", str(tmp_path / "run"), "--out", str(tmp_path / "b.json")])
    assert_refused(result, "the disk is full", str(tmp_path / "b.json"), "free on the file system")
