"""`bench transfer`: a tiny end-to-end run (32 px, 2 fine-tuning steps, 4 episodes), its
resume, an added evaluation, and the refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli_helpers import explain, invoke

TINY = ["--image-size", "32", "--finetune-steps", "2", "--batch-size", "8", "--episodes", "4",
        "--queries", "3", "--bank-views", "3", "--device", "cpu", "--no-progress"]


def transfer(tmp_path, out, *extra):
    return invoke(["transfer", *TINY, "--episodes-dir", str(tmp_path / "ep"), "--out", str(out),
                   *extra])


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    out = tmp / "out"
    result = transfer(tmp, out)
    return tmp, out, result


def test_tiny_transfer_compares_the_three_networks(done):
    tmp, out, result = done
    assert result.exit_code == 0, explain(result)
    record = json.loads((out / "transfer.json").read_text())
    assert record["kind"] == "fewshot-bench transfer" and len(record["evaluations"]) == 1
    for m in ("ce", "schane"):
        ft = json.loads((out / "finetune" / m / "finetune.json").read_text())
        assert ft["config"]["method"] == m and ft["finished"]
    (evaluation,) = (out / "eval").iterdir()
    runs = {p.name: json.loads((p / "run.json").read_text()) for p in evaluation.iterdir()}
    assert set(runs) == {"pretrained", "ce", "schane"}
    assert runs["pretrained"]["config"]["weights"] is None
    assert runs["ce"]["config"]["weights"].endswith("finetune/ce/weights.pth")
    hashes = {r["episodes"]["content_hash"] for r in runs.values()}
    assert len(hashes) == 1  # the same stored episodes for every network
    paired = pd.read_csv(out / "report" / "paired_table.csv")
    pairs = set(zip(paired["a"], paired["b"]))
    for m in ("protonet", "logreg"):
        assert (f"{m}(weights=pretrained)", f"{m}(weights=ce)") in pairs
        assert (f"{m}(weights=pretrained)", f"{m}(weights=schane)") in pairs
        assert (f"{m}(weights=ce)", f"{m}(weights=schane)") in pairs
    assert "logreg(weights=schane) - logreg(weights=ce)" in result.stdout


def test_rerun_reuses_everything_and_gives_the_same_numbers(done):
    tmp, out, first = done
    weights = out / "finetune" / "schane" / "weights.pth"
    stamp = weights.stat().st_mtime_ns
    before = pd.read_csv(out / "report" / "episodes.csv")
    again = transfer(tmp, out)
    assert again.exit_code == 0, explain(again)
    assert "already holds this fine-tune" in again.stderr
    assert weights.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(pd.read_csv(out / "report" / "episodes.csv"), before)


def test_other_evaluation_options_add_an_evaluation(done):
    tmp, out, _ = done
    result = transfer(tmp, out, "--shots", "2")
    assert result.exit_code == 0, explain(result)
    record = json.loads((out / "transfer.json").read_text())
    assert len(record["evaluations"]) == 2 and len(list((out / "eval").iterdir())) == 2
    main = pd.read_csv(out / "report" / "main_table.csv")
    assert set(main["shots"].astype(str)) == {"1", "2"}


def test_other_finetuning_settings_are_refused(done):
    tmp, out, _ = done
    before = (out / "transfer.json").read_bytes()
    result = transfer(tmp, out, "--finetune-lr", "0.001")
    assert result.exit_code == 2, explain(result)
    assert "holds fine-tunes made with other settings" in result.stderr
    assert "lr: 0.0001 there, 0.001 now" in result.stderr
    assert (out / "transfer.json").read_bytes() == before


@pytest.mark.parametrize("extra,words", [
    (["--split", "train"], "must come from another one"),
    (["--dataset", "folder:FOLDER", "--split-ratios", "0:0:1"], "no train classes"),
    (["--finetune-steps", "2", "--epochs", "1"], "either --epochs or --steps"),
    (["--batch-size", "1"], "at least 2 images"),
    (["--methods", "logreg", "--logreg-solver", "lbfgs"], "'lbfgs' is not one of"),
    # found by the evaluation's episodes: refused before the fine-tunes, not after them
    (["--ways", "500"], "--ways 500 needs 500 classes"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, extra, words):
    folder = tmp_path / "imgs"
    folder.mkdir()
    extra = [e.replace("FOLDER", str(folder)) for e in extra]
    out = tmp_path / "out"
    result = transfer(tmp_path, out, *extra)
    assert result.exit_code == 2, explain(result)
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_foreign_folder_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = transfer(tmp_path, out)
    assert result.exit_code == 2, explain(result)
    assert "is not the output of `bench transfer`" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
