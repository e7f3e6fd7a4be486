"""The episode engine (EpisodeFinetuner) against the straightforward per-episode loop.

The engine trains many episodes at once on a feature bank; `reference.py` deep-copies the
backbone per episode and runs the whole network every step. Same protocol, so the two must
give the same per-episode accuracies: that is the test that the engine's speed-ups (bank,
stacked per-episode parameters, vmap, the hand-written norm-mode autograd) change nothing.

Tiny and fast: randomly initialised tf_efficientnet_lite0 (fixed torch seed), emoji images
at 48 px, 5-way 1-shot, 3 queries, a few steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.bank import build_bank, normalised_views
from fewshot_bench.data import create_dataset
from fewshot_bench.episodes import EpisodeSpec, sample_episodes
from fewshot_bench import finetune
from fewshot_bench.finetune import EpisodeFinetuner, FinetuneConfig, view_schedule
from fewshot_bench.reference import (
    reference_finetune_episode,
    reference_linear_probe_episode,
    reference_protonet_episode,
)
from fewshot_bench.split import split_backbone

WAYS, SHOTS, QUERIES, N_EPISODES = 5, 1, 3, 6
SIZE, BANK_VIEWS, SEED = 48, 4, 0


class Setup:
    """Data, model, episodes, image bank; feature banks and engines built per tune mode."""

    def __init__(self):
        self.data = create_dataset("emoji", "test")
        torch.manual_seed(0)
        self.model = create_backbone("tf_efficientnet_lite0", pretrained=False)
        dc = backbone_data_config(self.model)
        spec = EpisodeSpec("emoji", "test", WAYS, SHOTS, QUERIES, N_EPISODES, SEED)
        eps = sample_episodes(self.data.labels, spec, self.data.fingerprint())
        self.used = np.unique(np.concatenate([eps.support.ravel(), eps.query.ravel()]))
        row_of = np.full(len(self.data), -1, dtype=np.int64)
        row_of[self.used] = np.arange(len(self.used))
        self.support = torch.from_numpy(row_of[eps.support])
        self.query = torch.from_numpy(row_of[eps.query])
        self.bank_kw = dict(n_views=BANK_VIEWS, size=SIZE, mean=dc["mean"], std=dc["std"],
                            interpolation=dc["interpolation"], seed=SEED)
        self.image_bank = normalised_views(self.data.images, self.used, **self.bank_kw)
        self._engines: dict[str, EpisodeFinetuner] = {}

    def engine(self, tune: str) -> EpisodeFinetuner:
        if tune not in self._engines:
            split = split_backbone(self.model, tune)
            bank = build_bank(split.lower, self.data.images, self.used, progress=False, **self.bank_kw)
            self._engines[tune] = EpisodeFinetuner(split, bank, ways=WAYS, shots=SHOTS)
        return self._engines[tune]


@pytest.fixture(scope="module")
def setup() -> Setup:
    return Setup()


def run(engine: EpisodeFinetuner, s: Setup, ids, cfg: FinetuneConfig, seed: int = SEED):
    ids = np.array(ids)  # a copy: torch refuses negative strides
    return engine.finetune(s.support[ids], s.query[ids], ids, seed, cfg)


# -- engine vs the straightforward loop -------------------------------------------------
# Adam's first updates are ~lr * sign(grad), so rounding-level differences in near-zero
# gradient entries become lr-sized steps; with the many parameters of `last` mode that
# drifts visibly within a few steps even between two runs of the reference loop itself
# (e.g. in channels-last vs contiguous memory format). SGD does not amplify rounding, so
# `last` and `full` are compared with SGD (`full` with a small lr: a randomly initialised
# network trained whole with a large one is chaotic too); `norm` and `head` agree under Adam.
# tests/test_last_agreement.py pins `last` under Adam at the defaults, in float64 (where
# rounding is not amplified into view) and, for ResNet and ViTs, in float32.
CASES = [
    ("norm", FinetuneConfig(lam=0.9, steps=5, views=2)),  # SCHaNe, the fast autograd path
    # a large SGD lr: the FiLM parameters move enough that a 1% error in their gradient
    # shows in the loss (Adam would hide any constant gradient scale)
    ("norm", FinetuneConfig(lam=0.0, steps=5, views=2, optimizer="sgd", lr=1.0)),  # CE
    ("head", FinetuneConfig(lam=0.0, steps=5, views=2)),
    # the ablations: labels without hard-negative weights, hard negatives without labels
    ("norm", FinetuneConfig(lam=0.9, steps=5, views=2, contrastive="supcon",
                            optimizer="sgd", lr=1.0)),
    ("norm", FinetuneConfig(lam=0.9, steps=5, views=3, contrastive="hcl",
                            optimizer="sgd", lr=1.0)),
    # schane-detached: no gradient through the hard-negative weights
    ("norm", FinetuneConfig(lam=0.9, steps=5, views=2, detach_weights=True,
                            optimizer="sgd", lr=1.0)),
    ("last", FinetuneConfig(lam=0.9, steps=4, views=2, optimizer="sgd", lr=0.05)),  # vmap path
    # the head at its own lr (two optimiser parameter groups)
    ("last", FinetuneConfig(lam=0.0, steps=4, views=2, optimizer="sgd", lr=0.05,
                            head_lr_factor=4.0)),
    ("full", FinetuneConfig(lam=0.9, steps=2, views=2, optimizer="sgd", lr=0.005)),
]


@pytest.mark.parametrize("tune,cfg", CASES, ids=[
    f"{t}-{c.optimizer}-lam{c.lam}-{c.contrastive}{'-detached' if c.detach_weights else ''}"
    f"{f'-head{c.head_lr_factor:g}' if c.head_lr_factor != 1 else ''}" for t, c in CASES])
def test_engine_matches_reference_loop(setup, tune, cfg):
    ids = [0, 1, 2]
    res = run(setup.engine(tune), setup, ids, cfg)
    assert not res.failed.any()
    ref = [reference_finetune_episode(setup.model, tune, setup.image_bank, setup.support[e],
                                      setup.query[e], e, SEED, cfg, WAYS, SHOTS) for e in ids]
    ref_acc = np.array([r["accuracy"] for r in ref])
    n_query = WAYS * QUERIES  # compare numbers of correct queries: exact integers
    assert np.max(np.abs(np.rint(res.accuracy * n_query) - np.rint(ref_acc * n_query))) == 0, (
        res.accuracy, ref_acc)
    np.testing.assert_allclose(res.loss_before, [r["loss_before"] for r in ref], rtol=1e-4)
    np.testing.assert_allclose(res.loss_after, [r["loss_after"] for r in ref], rtol=1e-4)
    # training did something, so the agreement is not trivially "nothing moved"
    assert np.all(np.abs(res.loss_after - res.loss_before) > 1e-3)


@pytest.mark.parametrize("tune", ["norm", "last"])
def test_linear_probe_matches_reference_loop(setup, tune):
    """The batched probe (cached view embeddings, stacked heads) against nn.Linear trained
    on the whole frozen network's outputs, one episode at a time. The tune mode only
    changes where the network is cut; the probe's features must not depend on it."""
    # SGD, as for `last` above: Adam's sign-like first steps turn the rounding differences
    # of near-zero gradient entries (2 threads vs 1, fused vs whole network) into lr-sized ones
    cfg = FinetuneConfig(steps=8, views=2, optimizer="sgd", lr=2.0, weight_decay=1e-3)
    ids = [0, 1, 2, 3]
    res = setup.engine(tune).linear_probe(setup.support[ids], setup.query[ids],
                                          np.array(ids), SEED, cfg)
    ref = [reference_linear_probe_episode(setup.model, setup.image_bank, setup.support[e],
                                          setup.query[e], e, SEED, cfg, WAYS, SHOTS)
           for e in ids]
    n_query = WAYS * QUERIES
    np.testing.assert_array_equal(np.rint(res.accuracy * n_query),
                                  np.rint(np.array([r["accuracy"] for r in ref]) * n_query))
    np.testing.assert_allclose(res.loss_before, np.log(WAYS), rtol=1e-6)  # zero init: uniform
    np.testing.assert_allclose(res.loss_after, [r["loss_after"] for r in ref], rtol=1e-4)
    assert np.all(res.loss_after < res.loss_before - 1e-3)  # it trained
    assert res.loss_curve.shape == (len(ids), cfg.steps)


def test_linear_probe_grouping_invariant(setup):
    engine = setup.engine("norm")
    cfg = FinetuneConfig(steps=4, views=2, lr=0.05)
    ids = np.arange(N_EPISODES)
    whole = engine.linear_probe(setup.support[ids], setup.query[ids], ids, SEED, cfg)
    for i in range(0, N_EPISODES, 2):
        part = engine.linear_probe(setup.support[ids[i:i + 2]], setup.query[ids[i:i + 2]],
                                   ids[i:i + 2], SEED, cfg)
        np.testing.assert_array_equal(part.accuracy, whole.accuracy[i:i + 2])
        np.testing.assert_allclose(part.loss_after, whole.loss_after[i:i + 2], rtol=1e-5)


def test_reference_loop_leaves_model_untouched(setup):
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    flags = [p.requires_grad for p in setup.model.parameters()]
    cfg = FinetuneConfig(lam=0.0, steps=2, views=2, lr=0.5)
    reference_finetune_episode(setup.model, "last", setup.image_bank, setup.support[0],
                               setup.query[0], 0, SEED, cfg, WAYS, SHOTS)
    after = setup.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in setup.model.parameters()] == flags


# -- grouping, determinism ----------------------------------------------------------------
@pytest.mark.parametrize("tune", ["norm", "last"])
def test_grouping_does_not_change_results(setup, tune):
    cfg = FinetuneConfig(lam=0.9, steps=4, views=2, optimizer="sgd" if tune == "last" else "adam",
                         lr=0.05 if tune == "last" else 0.01)
    engine = setup.engine(tune)
    whole = run(engine, setup, range(N_EPISODES), cfg)
    for size in (1, 2, 3):
        parts = [run(engine, setup, range(i, min(i + size, N_EPISODES)), cfg)
                 for i in range(0, N_EPISODES, size)]
        acc = np.concatenate([p.accuracy for p in parts])
        np.testing.assert_array_equal(acc, whole.accuracy)
        for key in ("loss_before", "loss_after"):
            got = np.concatenate([getattr(p, key) for p in parts])
            np.testing.assert_allclose(got, getattr(whole, key), rtol=1e-5)
    # episode order within a group does not matter either
    rev = run(engine, setup, np.arange(N_EPISODES)[::-1], cfg)
    np.testing.assert_array_equal(rev.accuracy[::-1], whole.accuracy)


def test_same_seed_same_results(setup):
    engine = setup.engine("norm")
    cfg = FinetuneConfig(lam=0.9, steps=4, views=2)
    a = run(engine, setup, range(4), cfg)
    b = run(engine, setup, range(4), cfg)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    np.testing.assert_array_equal(a.loss_before, b.loss_before)
    np.testing.assert_array_equal(a.loss_after, b.loss_after)
    c = run(engine, setup, range(4), cfg, seed=SEED + 1)  # other views, other losses
    assert not np.array_equal(a.loss_before, c.loss_before)


def test_view_schedule():
    s = view_schedule(3, 7, steps=10, n_images=5, views=2, bank_views=8)
    assert s.shape == (10, 5, 2)
    assert s.min() >= 0 and s.max() < 8
    assert np.all(s[..., 0] != s[..., 1])  # distinct views of one image within a step
    np.testing.assert_array_equal(s, view_schedule(3, 7, 10, 5, 2, 8))
    assert not np.array_equal(s, view_schedule(3, 8, 10, 5, 2, 8))
    assert view_schedule(3, 7, 0, 5, 2, 8).shape == (1, 5, 2)  # steps=0: the loss batch


# -- ProtoNet and the head initialisation --------------------------------------------------
def test_protonet_is_nearest_centroid(setup):
    engine = setup.engine("norm")
    ids = np.arange(N_EPISODES)
    got = engine.protonet(setup.support[ids], setup.query[ids])
    # direct computation: whole pretrained network on the clean images, numpy from there
    with torch.no_grad():
        emb = setup.model(setup.image_bank[:, 0]).numpy().astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    expected = []
    for e in ids:
        s, q = setup.support[e].numpy(), setup.query[e].numpy()
        centroids = emb[s].reshape(WAYS, SHOTS, -1).mean(1)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        pred = (emb[q] @ centroids.T).argmax(1)
        expected.append(np.mean(pred == np.repeat(np.arange(WAYS), QUERIES)))
    n_query = WAYS * QUERIES  # compare counts of correct queries: exact
    np.testing.assert_array_equal(np.rint(got * n_query), np.rint(np.array(expected) * n_query))
    ref = [reference_protonet_episode(setup.model, setup.image_bank, setup.support[e],
                                      setup.query[e], WAYS, SHOTS) for e in ids]
    np.testing.assert_array_equal(np.rint(got * n_query), np.rint(np.array(ref) * n_query))


@pytest.mark.parametrize("tune", ["head", "norm", "last"])
def test_zero_steps_equals_protonet(setup, tune):
    engine = setup.engine(tune)
    ids = np.arange(N_EPISODES)
    res = run(engine, setup, ids, FinetuneConfig(lam=0.0, steps=0))
    np.testing.assert_array_equal(res.accuracy, engine.protonet(setup.support[ids], setup.query[ids]))
    np.testing.assert_allclose(res.loss_after, res.loss_before, rtol=1e-6)


# -- failures stay in their episode ------------------------------------------------------
@pytest.mark.parametrize("tune", ["norm", "last"])
def test_nan_fails_only_its_episode(setup, tune):
    clean_engine = setup.engine(tune)
    bank = clean_engine.bank
    # a NaN image, appended as a new bank row, replaces episode 1's first support image
    nan_bank = torch.cat([bank, torch.full_like(bank[:1], float("nan"))])
    engine = EpisodeFinetuner(clean_engine.split, nan_bank, ways=WAYS, shots=SHOTS)
    ids = np.arange(4)
    support = setup.support[ids].clone()
    support[1, 0] = len(bank)
    cfg = FinetuneConfig(lam=0.9, steps=3, views=2)
    res = engine.finetune(support, setup.query[ids], ids, SEED, cfg)
    clean = run(clean_engine, setup, ids, cfg)
    np.testing.assert_array_equal(res.failed, [False, True, False, False])
    assert np.isnan(res.accuracy[1]) and res.reason[1] and not res.reason[0]
    keep = [0, 2, 3]
    np.testing.assert_array_equal(res.accuracy[keep], clean.accuracy[keep])
    np.testing.assert_allclose(res.loss_after[keep], clean.loss_after[keep], rtol=1e-6)


def test_infinite_lr_fails_every_episode(setup):
    engine = setup.engine("norm")
    res = run(engine, setup, range(3), FinetuneConfig(lam=0.0, steps=2, lr=float("inf")))
    assert res.failed.all() and np.isnan(res.accuracy).all()
    assert np.isfinite(res.loss_before).all()


# -- accuracy after fewer steps (--eval-steps) --------------------------------------------
@pytest.mark.parametrize("tune,cfg", [
    ("norm", FinetuneConfig(lam=0.9, steps=6, views=2, lr=0.05)),
    ("last", FinetuneConfig(lam=0.0, steps=4, views=2, optimizer="sgd", lr=0.05)),
], ids=["norm-adam", "last-sgd"])
def test_eval_steps_equal_shorter_runs(setup, tune, cfg):
    """The accuracy recorded after s steps is what a run of s steps gives (the same view
    schedule prefix; no lr schedule), for every s, 0 and the last included."""
    from dataclasses import replace
    engine = setup.engine(tune)
    ids = range(N_EPISODES)
    eval_steps = tuple(range(cfg.steps + 1))
    long = run(engine, setup, ids, replace(cfg, eval_steps=eval_steps))
    assert long.step_accuracy.shape == (N_EPISODES, len(eval_steps))
    for j, s in enumerate(eval_steps):
        short = run(engine, setup, ids, replace(cfg, steps=s))
        np.testing.assert_array_equal(long.step_accuracy[:, j], short.accuracy, err_msg=f"{s} steps")
    np.testing.assert_array_equal(long.step_accuracy[:, -1], long.accuracy)
    # training changes predictions here, so an off-by-one step would show
    assert len({tuple(c) for c in long.step_accuracy.T}) > 1


def test_eval_steps_linear_probe(setup):
    from dataclasses import replace
    engine = setup.engine("norm")
    ids = np.arange(N_EPISODES)
    cfg = FinetuneConfig(steps=5, views=2, lr=0.05)
    long = engine.linear_probe(setup.support[ids], setup.query[ids], ids, SEED,
                               replace(cfg, eval_steps=(1, 3, 5)))
    for j, s in enumerate((1, 3, 5)):
        short = engine.linear_probe(setup.support[ids], setup.query[ids], ids, SEED,
                                    replace(cfg, steps=s))
        np.testing.assert_array_equal(long.step_accuracy[:, j], short.accuracy)


def test_an_lr_that_overflows_the_optimiser_fails_every_episode(setup):
    """Adam's first step is 10 x lr: above float32's largest, torch raises mid-step; the
    engine records that as failed episodes, not a traceback (bench run refuses such lrs)."""
    engine = setup.engine("norm")
    for train in (engine.finetune, engine.linear_probe):
        ids = np.arange(3)
        res = train(setup.support[ids], setup.query[ids], ids, SEED,
                    FinetuneConfig(lam=0.0, steps=2, lr=1e38))
        assert res.failed.all() and np.isnan(res.accuracy).all()
        assert all("overflowed float32" in r for r in res.reason), res.reason


def _nan_engine(setup, tune: str = "norm"):
    """An engine whose bank has one more row, all NaN (a broken image), and its index."""
    clean = setup.engine(tune)
    nan_bank = torch.cat([clean.bank, torch.full_like(clean.bank[:1], float("nan"))])
    return EpisodeFinetuner(clean.split, nan_bank, ways=WAYS, shots=SHOTS), len(clean.bank)


def test_nan_embeddings_fail_their_episode_in_every_method(setup):
    """An argmax over NaN scores picks a class anyway: protonet, linear-probe and a trained
    method given a NaN image must report the episode failed, not score it."""
    import pandas as pd

    from fewshot_bench import analysis
    from fewshot_bench.config import RunConfig
    from fewshot_bench.runner import _run_window

    engine, nan_row = _nan_engine(setup)
    ids = np.arange(3)
    support, query = setup.support[ids].clone(), setup.query[ids].clone()
    support[1, 0] = nan_row  # episode 1: a NaN support image
    query[2, 0] = nan_row  # episode 2: a NaN query image (the loss stays finite)
    acc = engine.protonet(support, query)
    assert np.isnan(acc[1:]).all() and not np.isnan(acc[0])
    cfg = FinetuneConfig(lam=0.9, steps=2, views=2)
    for train in (engine.linear_probe, engine.finetune):
        res = train(support, query, ids, SEED, cfg)
        np.testing.assert_array_equal(res.failed, [False, True, True])
        assert res.reason[2] == "non-finite embeddings", res.reason
    assert engine.linear_probe(support, query, ids, SEED, cfg).reason[1] == "non-finite embeddings"

    run_cfg = RunConfig(methods=("protonet", "ce"), ways=WAYS, shots=SHOTS, steps=2).validate()
    support[0, 0] = nan_row  # now every episode
    rows = _run_window(run_cfg, engine, support, query, {m: ids for m in run_cfg.methods}, ids)
    assert {(r["status"], r["accuracy"]) for r in rows} == {("failed", None)}
    assert {r["reason"] for r in rows if r["method"] == "protonet"} == {"non-finite embeddings"}
    summary = analysis.method_summary(pd.DataFrame(rows))
    assert list(summary["accuracy"]) == ["n/a", "n/a"] and list(summary["failed"]) == [3, 3]


@pytest.mark.parametrize("tune", ["head", "last"])
def test_the_head_trains_at_its_own_lr(setup, tune, monkeypatch):
    made = []  # the optimisers the engine builds
    make = finetune._make_optimizer
    monkeypatch.setattr(finetune, "_make_optimizer",
                        lambda *a, **kw: made.append(make(*a, **kw)) or made[-1])
    cfg = FinetuneConfig(lam=0.0, steps=1, views=2, lr=0.002, head_lr_factor=5.0)
    base = run(setup.engine(tune), setup, [0], FinetuneConfig(lam=0.0, steps=1, views=2, lr=0.002))
    res = run(setup.engine(tune), setup, [0], cfg)
    groups = [(len(g["params"]), g["lr"]) for g in made[-1].param_groups]
    if tune == "head":  # the head trains alone, at lr itself: the factor changes nothing
        assert groups == [(1, 0.002)]
        np.testing.assert_array_equal(res.loss_after, base.loss_after)
    else:  # the backbone tensors at lr, the head (last) at factor x lr
        assert groups[-1] == (1, pytest.approx(0.01)) and groups[0][1] == 0.002
        assert len(groups) == 2 and groups[0][0] >= 1
        assert not np.array_equal(res.loss_after, base.loss_after)
