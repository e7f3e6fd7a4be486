"""`bench finetune`: full-data fine-tuning end to end, its weights, holdout and refusals.

Budgets are tiny (32 px, 3 steps of 8 images) so the whole file runs in well under a minute
on a 2-core CPU; what is checked is the plumbing, not the accuracy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_bench import fulltune
from fewshot_bench.backbones import create_backbone
from fewshot_bench.data import create_dataset
from fewshot_bench.data.base import ImageSplit
from fewshot_bench.errors import BenchError
from fewshot_bench.fulltune import FullFinetuneConfig, finetune_full, holdout_split

from cli_helpers import explain, invoke

TINY = ["--image-size", "32", "--steps", "3", "--batch-size", "8", "--device", "cpu",
        "--no-progress"]


def _tiny_cfg(**overrides) -> FullFinetuneConfig:
    kw = dict(image_size=32, steps=3, batch_size=8, device="cpu", **overrides)
    return FullFinetuneConfig(**kw)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`bench finetune` once per method; records which images went into training batches."""
    out = {}
    for method in ("ce", "schane"):
        seen: list[int] = []
        real = fulltune._training_views

        def spy(images, ids, **kw):
            seen.extend(int(i) for i in ids)
            return real(images, ids, **kw)

        folder = tmp_path_factory.mktemp(f"ft-{method}") / "out"
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fulltune, "_training_views", spy)
            result = invoke(["finetune", "--method", method, "--out", str(folder), *TINY])
        out[method] = (result, folder, seen)
    return out


@pytest.mark.parametrize("method", ["ce", "schane"])
def test_finetune_end_to_end(runs, method):
    result, folder, seen = runs[method]
    assert result.exit_code == 0, explain(result)
    assert "holdout top-1" in result.stdout and "weights.pth" in result.stdout
    record = json.loads((folder / "finetune.json").read_text())
    assert record["config"]["method"] == method
    assert record["method"]["lambda"] == (0.0 if method == "ce" else 0.9)
    assert record["finished"] and record["versions"]["torch"]
    assert record["hardware"]["device"] == "cpu"
    assert len(record["history"]) == 1 and record["history"][0]["step"] == 3
    h = record["history"][0]
    assert np.isfinite(h["train_loss"]) and 0.0 <= h["holdout_top1"] <= 1.0
    assert record["weights"]["sha256"] == _sha(folder / "weights.pth")
    assert record["data"]["image_size"] == 32 and record["schedule"]["views"] == 2
    assert len(seen) == 3 * 8  # 3 steps of 8 images, each image once per step


def test_holdout_images_never_in_training_batches(runs):
    for _, folder, seen in runs.values():
        holdout = set(json.loads((folder / "finetune.json").read_text())["data"]["holdout_ids"])
        assert holdout and not holdout & set(seen)


def test_weights_load_with_bench_run_and_differ(runs, tiny, tmp_path):
    _, folder, _ = runs["schane"]
    weights = folder / "weights.pth"
    tuned = create_backbone("tf_efficientnet_lite0", weights=weights).state_dict()
    pretrained = create_backbone("tf_efficientnet_lite0").state_dict()
    assert tuned.keys() == pretrained.keys()
    assert not any(k.startswith("classifier") for k in tuned)
    changed = [k for k in tuned if not torch.equal(tuned[k], pretrained[k])]
    assert "conv_stem.weight" in changed and len(changed) > len(tuned) // 2

    result = invoke(tiny.args(tmp_path / "episodes", tmp_path / "run", "--weights", str(weights),
                              "--methods", "protonet,ce"))
    assert result.exit_code == 0, explain(result)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["backbone"]["weights"]["source"] == "file"
    assert run["backbone"]["weights"]["sha256"] == _sha(weights)


def test_same_seed_same_numbers(runs, tmp_path):
    result, folder, _ = runs["schane"]
    first = json.loads((folder / "finetune.json").read_text())
    again = finetune_full(_tiny_cfg(method="schane", out=str(tmp_path / "again")),
                          progress=False, echo=lambda m: None)
    assert again.history == first["history"]
    assert again.weights_sha256 == first["weights"]["sha256"]  # bit for bit


def test_rerun_into_same_folder_reuses_and_never_overwrites(runs):
    _, folder, _ = runs["ce"]
    before = (folder / "weights.pth").stat().st_mtime_ns
    result = invoke(["finetune", "--method", "ce", "--out", str(folder), *TINY])
    assert result.exit_code == 0, explain(result)
    assert "already holds this fine-tune" in result.stderr
    assert (folder / "weights.pth").stat().st_mtime_ns == before

    result = invoke(["finetune", "--method", "ce", "--lr", "0.01", "--out", str(folder), *TINY])
    assert_refused(result)
    assert "lr" in result.stderr and (folder / "weights.pth").stat().st_mtime_ns == before


def assert_refused(result):
    assert result.exit_code == 2, explain(result)
    assert isinstance(result.exception, SystemExit), explain(result)
    assert "Traceback" not in result.output, explain(result)
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message


@pytest.mark.parametrize("extra, words", [
    (["--dataset", "nope"], "Unknown data set"),
    (["--method", "supcon"], "Use ce, schane, schane-perpos"),
    (["--method", "schane", "--views", "1"], "two augmented views"),
    (["--holdout", "0.01"], "no held-out image"),
    (["--holdout", "0.99"], "no training image"),
    (["--holdout", "1.5"], "strictly between 0 and 1"),
    (["--epochs", "2"], "either --epochs or --steps"),  # TINY passes --steps
    (["--batch-size", "1"], "at least 2 images"),
    (["--batch-size", "100000"], "larger than the"),
    (["--lambda", "2"], "--lambda must lie in [0, 1]"),
    (["--tau", "0"], "--tau must be positive"),
    (["--steps", "99999999999999999999"], "--steps must be at most"),
    (["--image-size", "100000"], "--image-size must be between 16 and"),
])
def test_bad_input_is_refused(tmp_path, extra, words):
    out = tmp_path / "out"
    result = invoke(["finetune", "--out", str(out), *TINY, *extra])
    assert_refused(result)
    assert words in result.stderr
    assert not out.exists()  # refused before anything was written


def test_foreign_or_file_out_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = invoke(["finetune", "--out", str(foreign), *TINY])
    assert_refused(result)
    assert "not the output of `bench finetune`" in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_refused(invoke(["finetune", "--out", str(a_file), *TINY]))
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("record, words", [
    ({"kind": fulltune.KIND, "config": []}, "'config' is a list, not an object"),
    ({"kind": fulltune.KIND, "config": {}, "weights": "x"}, "'weights' is a string"),
    (None, "holds null"),
])
def test_damaged_finetune_record_is_refused(tmp_path, record, words):
    out = tmp_path / "out"
    out.mkdir()
    (out / fulltune.RECORD).write_text(json.dumps(record))
    result = invoke(["finetune", "--out", str(out), *TINY])
    assert_refused(result)
    assert words in result.stderr and "damaged" in result.stderr
    assert [p.name for p in out.iterdir()] == [fulltune.RECORD]
    assert json.loads((out / fulltune.RECORD).read_text()) == record


def test_holdout_split_is_stratified_grouped_and_seeded():
    data = create_dataset("emoji", "train")
    groups = data.meta["unified"]
    train, hold = holdout_split(data.labels, 0.2, 0, groups)
    assert len(np.intersect1d(train, hold)) == 0 and len(train) + len(hold) == len(data)
    for c in range(data.num_classes):  # every class on both sides, about 20% held out
        n_hold = np.sum(data.labels[hold] == c)
        n_all = np.sum(data.labels == c)
        assert 1 <= n_hold < n_all and abs(n_hold / n_all - 0.2) < 0.15
    assert not set(groups[train]) & set(groups[hold])  # both drawings of an emoji together
    again, _ = holdout_split(data.labels, 0.2, 0, groups)
    other, _ = holdout_split(data.labels, 0.2, 1, groups)
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    with pytest.raises(BenchError, match="at least two"):
        holdout_split(np.array([0, 0, 1]), 0.5, 0)


def test_whole_epochs_cover_every_training_image_and_no_holdout(monkeypatch, tmp_path):
    """A tiny fake split, two whole epochs: the batches are exactly the training images."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 6)
    fake = ImageSplit("fake", "train", rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
                      labels, [f"c{i}" for i in range(4)])
    monkeypatch.setattr(fulltune, "create_dataset", lambda *a, **kw: fake)
    seen: list[list[int]] = []
    real = fulltune._training_views
    monkeypatch.setattr(fulltune, "_training_views",
                        lambda images, ids, **kw: seen.append(list(ids)) or real(images, ids, **kw))
    r = finetune_full(FullFinetuneConfig(dataset="fake", method="ce", image_size=32, epochs=2,
                                         batch_size=4, views=1, device="cpu",
                                         out=str(tmp_path / "o")),
                      progress=False, echo=lambda m: None)
    assert len(r.holdout_ids) == 4 and len(r.train_ids) == 20  # one of six per class
    assert [h["epoch"] for h in r.history] == [1, 2]
    for epoch in (seen[:5], seen[5:]):
        flat = sorted(i for batch in epoch for i in batch)
        assert flat == sorted(r.train_ids.tolist())
    assert seen[:5] != seen[5:]  # reshuffled every epoch


def test_interrupted_folder_with_same_settings_starts_over(runs, tmp_path):
    _, folder, _ = runs["ce"]
    record = json.loads((folder / "finetune.json").read_text())
    stopped = tmp_path / "stopped"
    stopped.mkdir()  # what a run killed mid-training leaves: the record, unfinished
    (stopped / "finetune.json").write_text(json.dumps({**record, "finished": None}))
    result = invoke(["finetune", "--method", "ce", "--out", str(stopped), *TINY])
    assert result.exit_code == 0, explain(result)
    again = json.loads((stopped / "finetune.json").read_text())
    assert again["finished"] and again["history"] == record["history"]
    assert _sha(stopped / "weights.pth") == record["weights"]["sha256"]


def test_help_states_the_library_defaults():
    """The CLI passes only the options given; its help must say what the library uses."""
    import re

    from fewshot_bench.cli import main

    cfg = FullFinetuneConfig()
    checked = 0
    for param in main.commands["finetune"].params:
        m = re.search(r"\[default: ([^\]$]+)\]", param.help or "")
        if not m or param.name in ("image_size", "out"):
            continue
        expected = fulltune.DEFAULT_EPOCHS if param.name == "epochs" else getattr(cfg, param.name)
        stated = m.group(1)
        assert (stated == expected if isinstance(expected, str)
                else float(stated) == float(expected)), (param.name, stated, expected)
        checked += 1
    assert checked >= 15
