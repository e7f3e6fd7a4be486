"""Imbalanced episodes (`--shots-dist`): parsing, sampling and storage, the engine's masks
against the reference loop on the unpadded support sets, and the per-band summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import explain, invoke
from fewshot_bench.analysis import band_summary
from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.bank import build_bank, normalised_views
from fewshot_bench.data import create_dataset
from fewshot_bench.episodes import EpisodeSpec, load_episodes, sample_episodes, save_episodes
from fewshot_bench.errors import BenchError
from fewshot_bench.finetune import EpisodeFinetuner, FinetuneConfig
from fewshot_bench.reference import (
    reference_finetune_episode,
    reference_linear_probe_episode,
    reference_protonet_episode,
)
from fewshot_bench.shots import parse_shots_dist
from fewshot_bench.split import split_backbone

WAYS, QUERIES, N_EPISODES, SEED = 5, 3, 4, 0
DIST = "uniform:1-3"
SHOTS = 3


# -- the distributions ---------------------------------------------------------------------
def test_parse_and_bands():
    d = parse_shots_dist("uniform:1-5")
    assert (d.kind, d.lo, d.hi) == ("uniform", 1, 5) and str(d) == "uniform:1-5"
    assert [b[1:] for b in d.bands()] == [(1, 2), (3, 4), (5, 5)]
    np.testing.assert_array_equal(d.band_of(np.array([1, 2, 3, 4, 5])), [0, 0, 1, 1, 2])
    assert [b[0] for b in parse_shots_dist("uniform:1-2").bands()] == ["few (1 shot)", "many (2 shots)"]
    z = parse_shots_dist("zipf:1:1-10")
    counts = z.sample(np.random.default_rng(0), 5)
    assert sorted(counts.tolist()) == [2, 3, 3, 5, 10]  # 10 * r^-1, rounded, ranks shuffled
    u = parse_shots_dist("uniform:2-4").sample(np.random.default_rng(0), 1000)
    assert set(u.tolist()) == {2, 3, 4}


@pytest.mark.parametrize("bad", ["uniform", "uniform:5-1", "uniform:0-3", "zipf:1-5",
                                 "uniform:1.0:1-5", "normal:1-5", "uniform:3-3", "zipf:-1:1-5"])
def test_bad_distributions_are_refused(bad):
    with pytest.raises(BenchError, match="--shots|--shots-dist"):
        parse_shots_dist(bad)


# -- sampling and storage --------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return create_dataset("emoji", "test")


def _spec(episodes=N_EPISODES, dist=DIST, shots=SHOTS):
    return EpisodeSpec("emoji", "test", WAYS, shots, QUERIES, episodes, SEED, dist)


def test_sampling_imbalanced_episodes(data, tmp_path):
    es = sample_episodes(data.labels, _spec(50), data.fingerprint())
    assert es.shots.shape == (50, WAYS) and es.shots.min() == 1 and es.shots.max() == 3
    assert len(np.unique(es.shots)) == 3
    sup = es.support.reshape(50, WAYS, SHOTS)
    mask = es.support_mask.reshape(50, WAYS, SHOTS)
    for e in range(50):
        for c in range(WAYS):
            real = sup[e, c][mask[e, c]]
            assert len(real) == es.shots[e, c] and len(set(real)) == len(real)
            assert np.all(sup[e, c][~mask[e, c]] == sup[e, c, 0])  # padding repeats image 0
            assert not set(real) & set(es.query[e].tolist())
    es.check_against_labels(data.labels)
    # prefix-stable like balanced sampling, and stored with its counts
    first = sample_episodes(data.labels, _spec(10), data.fingerprint())
    np.testing.assert_array_equal(first.shots, es.shots[:10])
    np.testing.assert_array_equal(first.support, es.support[:10])
    path = save_episodes(es, tmp_path)
    assert path.name == "emoji-test-5wuniform1-3s3q-50e-seed0.npz"
    back = load_episodes(path)
    np.testing.assert_array_equal(back.shots, es.shots)
    assert back.content_hash == es.content_hash
    # the counts are part of the content hash: editing them is detected
    assert sample_episodes(data.labels, _spec(50, "uniform:1-3"), "x").content_hash != \
        sample_episodes(data.labels, _spec(50, None), "x").content_hash


def test_balanced_spec_dict_is_unchanged():
    """Balanced episode files written before --shots-dist keep their content hash."""
    assert "shots_dist" not in _spec(dist=None).to_dict()


# -- the engine's masks against the reference loop on the real images only ---------------
class Setup:
    def __init__(self, data):
        torch.manual_seed(0)
        self.model = create_backbone("tf_efficientnet_lite0", pretrained=False)
        dc = backbone_data_config(self.model)
        es = sample_episodes(data.labels, _spec(), data.fingerprint())
        self.episodes = es
        used = np.unique(np.concatenate([es.support.ravel(), es.query.ravel()]))
        row_of = np.full(len(data), -1, dtype=np.int64)
        row_of[used] = np.arange(len(used))
        self.support = torch.from_numpy(row_of[es.support])
        self.query = torch.from_numpy(row_of[es.query])
        self.mask = torch.from_numpy(es.support_mask)
        kw = dict(n_views=4, size=48, mean=dc["mean"], std=dc["std"],
                  interpolation=dc["interpolation"], seed=SEED)
        self.image_bank = normalised_views(data.images, used, **kw)
        split = split_backbone(self.model, "norm")
        bank = build_bank(split.lower, data.images, used, progress=False, **kw)
        self.engine = EpisodeFinetuner(split, bank, ways=WAYS, shots=SHOTS)


@pytest.fixture(scope="module")
def setup(data):
    return Setup(data)


def _correct(acc) -> np.ndarray:
    return np.rint(np.asarray(acc) * WAYS * QUERIES)


@pytest.mark.parametrize("cfg", [
    FinetuneConfig(lam=0.0, steps=4, views=2, optimizer="sgd", lr=1.0),
    FinetuneConfig(lam=0.9, steps=4, views=2, optimizer="sgd", lr=1.0),
    FinetuneConfig(lam=0.9, steps=4, views=2, optimizer="sgd", lr=1.0, contrastive="supcon"),
], ids=["ce", "schane", "supcon"])
def test_finetune_masks_match_reference(setup, cfg):
    ids = np.arange(N_EPISODES)
    assert not setup.mask.all()  # some padding to mask
    res = setup.engine.finetune(setup.support, setup.query, ids, SEED, cfg,
                                support_mask=setup.mask)
    ref = [reference_finetune_episode(setup.model, "norm", setup.image_bank, setup.support[e],
                                      setup.query[e], e, SEED, cfg, WAYS, SHOTS,
                                      support_mask=setup.mask[e]) for e in ids]
    np.testing.assert_array_equal(_correct(res.accuracy), _correct([r["accuracy"] for r in ref]))
    np.testing.assert_allclose(res.loss_before, [r["loss_before"] for r in ref], rtol=1e-4)
    np.testing.assert_allclose(res.loss_after, [r["loss_after"] for r in ref], rtol=1e-4)
    # per-class accuracies average to the episode's accuracy (equal queries per class)
    np.testing.assert_allclose(res.class_accuracy.mean(1), res.accuracy)


def test_protonet_and_linear_probe_masks_match_reference(setup):
    ids = np.arange(N_EPISODES)
    acc, per_class = setup.engine.protonet(setup.support, setup.query, setup.mask, per_class=True)
    ref = [reference_protonet_episode(setup.model, setup.image_bank, setup.support[e],
                                      setup.query[e], WAYS, SHOTS, support_mask=setup.mask[e])
           for e in ids]
    np.testing.assert_array_equal(_correct(acc), _correct(ref))
    np.testing.assert_allclose(per_class.mean(1), acc)
    cfg = FinetuneConfig(steps=6, views=2, optimizer="sgd", lr=2.0)  # SGD: see test_finetune
    res = setup.engine.linear_probe(setup.support, setup.query, ids, SEED, cfg,
                                    support_mask=setup.mask)
    ref = [reference_linear_probe_episode(setup.model, setup.image_bank, setup.support[e],
                                          setup.query[e], e, SEED, cfg, WAYS, SHOTS,
                                          support_mask=setup.mask[e]) for e in ids]
    np.testing.assert_array_equal(_correct(res.accuracy), _correct([r["accuracy"] for r in ref]))
    np.testing.assert_allclose(res.loss_after, [r["loss_after"] for r in ref], rtol=1e-4)


def test_padding_content_does_not_matter(setup):
    """Whatever image sits in a padding slot, the results are the same: the masks remove
    it from prototypes, head initialisation and every loss term."""
    ids = np.arange(N_EPISODES)
    other = setup.support.clone()
    other[~setup.mask] = setup.query[0, 0]  # some unrelated image
    cfg = FinetuneConfig(lam=0.9, steps=3, views=2)
    a = setup.engine.finetune(setup.support, setup.query, ids, SEED, cfg, support_mask=setup.mask)
    b = setup.engine.finetune(other, setup.query, ids, SEED, cfg, support_mask=setup.mask)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_allclose(a.loss_after, b.loss_after, rtol=1e-5)
    unmasked = setup.engine.finetune(other, setup.query, ids, SEED, cfg)
    assert not np.allclose(unmasked.loss_before, a.loss_before)  # the mask did something


# -- bench run --shots-dist ----------------------------------------------------------------
def test_band_summary_by_hand():
    rows = pd.DataFrame([
        {"episode": 0, "method": "ce", "accuracy": 0.5, "status": "ok",
         "class_shots": [1, 2, 3], "class_accuracy": [0.0, 0.5, 1.0]},
        {"episode": 1, "method": "ce", "accuracy": 0.5, "status": "ok",
         "class_shots": [1, 1, 2], "class_accuracy": [1.0, 0.0, 0.5]},
    ])
    t = band_summary(rows, parse_shots_dist("uniform:1-3")).set_index("band")
    assert list(t.index) == ["few (1 shot)", "medium (2 shots)", "many (3 shots)"]
    assert list(t["episodes"]) == [2, 2, 1] and list(t["classes"]) == [3, 2, 1]
    few, medium, many = t["mean"]
    assert few == pytest.approx(25.0)  # episode 0: 0.0; episode 1: mean(1.0, 0.0) = 0.5
    assert medium == pytest.approx(50.0) and many == pytest.approx(100.0)


def test_bench_run_with_shots_dist(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    r = invoke(tiny.args(tmp_path / "eps", out, "--shots-dist", "zipf:1:1-4",
                         "--methods", "protonet,ce,schane"))
    assert r.exit_code == 0, explain(r)
    assert "by class frequency" in r.output and "few (1-2 shots)" in r.output
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert all(sorted(row["class_shots"]) == [1, 1, 1, 2, 4] for row in rows)  # 4 r^-1
    for row in rows:  # per-class accuracies are consistent with the episode's
        assert np.mean(row["class_accuracy"]) == pytest.approx(row["accuracy"])
    bands = pd.read_csv(out / "bands.csv")
    assert set(bands["method"]) == {"protonet", "ce", "schane"}
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["shots_dist"] == "zipf:1:1-4" and config["shots"] == 4
    # the same command resumes (nothing to do) with the same numbers
    again = invoke(tiny.args(tmp_path / "eps", out, "--shots-dist", "zipf:1:1-4",
                             "--methods", "protonet,ce,schane"))
    assert again.exit_code == 0, explain(again)
    pd.testing.assert_frame_equal(pd.read_csv(out / "bands.csv"), bands)


@pytest.mark.parametrize("dist,match", [("uniform:1-x", "not understood"),
                                        ("uniform:1-40", "largest possible HI of --shots-dist")])
def test_bench_run_bad_shots_dist(tiny, tmp_path, monkeypatch, dist, match):
    monkeypatch.chdir(tmp_path)
    r = invoke(tiny.args(tmp_path / "eps", tmp_path / "out", "--shots-dist", dist))
    assert r.exit_code == 2, explain(r)
    assert match in r.output and "Traceback" not in r.output


def test_bench_report_has_the_band_table(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    r = invoke(tiny.args(tmp_path / "eps", run_dir, "--shots-dist", "uniform:1-3",
                         "--methods", "protonet,ce"))
    assert r.exit_code == 0, explain(r)
    r = invoke(["report", str(run_dir), "--out", str(tmp_path / "rep"), "--no-figures"])
    assert r.exit_code == 0, explain(r)
    got = pd.read_csv(tmp_path / "rep" / "class_frequency.csv")
    want = pd.read_csv(run_dir / "bands.csv")  # the run's own summary
    assert list(got["band"]) == list(want["band"])
    np.testing.assert_allclose(got["mean"], want["mean"])
    assert got["band_shots"].iloc[0] == "1-1" and (got["shots"] == "uniform:1-3").all()
    assert "Accuracy by class frequency" in (tmp_path / "rep" / "report.md").read_text()
    assert "class frequency" in r.output
