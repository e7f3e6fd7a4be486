"""`--tune full` at its default lr learns; at `--tune norm`'s old lr 0.01 it collapses.

Issue 14: lr 0.01 (once inherited from norm) drives a fully tuned pretrained backbone to
chance accuracy, every query in one class. The per-mode default (config.TUNE_DEFAULTS)
must not. A tiny case: pretrained tf_efficientnet_lite0 (the offline weights), 32 px, two
5-way 1-shot val episodes with 3 queries per class, CE, the default steps (80).
"""

import json

import pytest

from fewshot_bench.config import TUNE_DEFAULTS
from fewshot_bench.runner import run

CHANCE = 0.2  # 5 ways


@pytest.fixture(scope="module")
def full_runs(tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("full-defaults")
    out = {}
    for name, lr in (("default", None), ("lr0.01", 0.01)):
        cfg = tiny.config(work / "ep", work / name, tune="full", methods=("ce",), split="val",
                          episodes=2, steps=None, lr=lr).validate()
        out[name] = run(cfg, progress=False, echo=lambda m: None)
    return out


def test_the_default_lr_is_the_modes(full_runs):
    record = json.loads((full_runs["default"].out_dir / "run.json").read_text())
    assert record["config"]["lr"] == TUNE_DEFAULTS["full"]["lr"]
    assert record["config"]["steps"] == TUNE_DEFAULTS["full"]["steps"]


def test_default_full_run_beats_chance_where_lr_001_does_not(full_runs):
    default = full_runs["default"].rows["accuracy"].mean()
    wrecked = full_runs["lr0.01"].rows["accuracy"].mean()
    assert wrecked <= CHANCE + 1 / 15  # collapsed: (almost) every query in one class
    assert default >= CHANCE + 2 / 15 > wrecked
