"""The compiled training step (fused.py) against the eager one: same outputs and gradients,
the same engine results, the threshold that keeps small runs eager, and the eager fallback
when compiling fails. Each distinct shape compiles once (seconds on this CPU), so the
shapes here are few and small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fewshot_bench import fused
from fewshot_bench.finetune import FinetuneConfig
from test_finetune import N_EPISODES, run, setup  # noqa: F401 - setup: the fixture
from test_split import _affine


@pytest.mark.parametrize("act", [nn.ReLU6, nn.ReLU])
def test_compiled_step_matches_the_eager_one(act):
    g = torch.Generator().manual_seed(0)
    G, B, P, C, M = 3, 4, 5, 16, 20
    mod = _affine(act, C)
    flat_bank = 4 * torch.randn(M, P, C, generator=g)  # wide: both clamp bounds are hit
    rows = torch.randint(0, M, (G, B), generator=g)
    w = (1 + 0.5 * torch.randn(G, C, generator=g)).requires_grad_()
    b = torch.randn(G, C, generator=g).requires_grad_()
    upstream = torch.randn(G, B, C, generator=g)

    out = mod.forward_rows({"weight": w, "bias": b}, flat_bank, rows)
    assert out is not None and not fused._failed
    (out * upstream).sum().backward()
    grads = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None
    eager = mod.forward_episodes({"weight": w, "bias": b}, flat_bank[rows])
    (eager * upstream).sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0], w.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], b.grad, rtol=1e-5, atol=1e-5)


def test_small_steps_stay_eager():
    cpu = torch.device("cpu")
    assert fused.worth_compiling(10, torch.Size([16, 1280]), cpu)  # the default run
    assert not fused.worth_compiling(10, torch.Size([1, 1280]), cpu)  # 32 px test runs
    assert not fused.worth_compiling(10, torch.Size([16, 1280]), torch.device("meta"))


@pytest.fixture
def compile_everything(monkeypatch):
    monkeypatch.setattr(fused, "MIN_EPISODE_ELEMENTS", 0)
    monkeypatch.setattr(fused, "_failed", [])


def test_engine_with_the_compiled_step_gives_the_eager_results(setup, compile_everything):
    engine = setup.engine("norm")
    cfg = FinetuneConfig(lam=0.9, steps=4, views=2)
    try:
        engine.compile = False
        eager = run(engine, setup, range(N_EPISODES), cfg)
        engine.compile = True
        compiled = run(engine, setup, range(N_EPISODES), cfg)
    finally:
        engine.compile = True
    assert not fused._failed
    np.testing.assert_array_equal(compiled.accuracy, eager.accuracy)
    for key in ("loss_before", "loss_after", "loss_curve"):
        np.testing.assert_allclose(getattr(compiled, key), getattr(eager, key), rtol=1e-5)


def test_a_failed_compile_falls_back_to_eager_with_a_warning(setup, compile_everything,
                                                             monkeypatch):
    def broken(lo, hi):
        def kernel(*args):
            raise RuntimeError("no C++ compiler found\nmore detail")
        return kernel

    monkeypatch.setattr(fused, "_kernel", broken)
    engine = setup.engine("norm")
    cfg = FinetuneConfig(lam=0.9, steps=2, views=2)
    with pytest.warns(UserWarning, match="runs it eagerly.*no C\\+\\+ compiler found\\)"):
        result = run(engine, setup, range(2), cfg)
    assert fused._failed == ["RuntimeError: no C++ compiler found"]
    engine.compile = False
    try:
        np.testing.assert_array_equal(result.loss_after, run(engine, setup, range(2), cfg).loss_after)
    finally:
        engine.compile = True
    assert not fused.worth_compiling(10, torch.Size([16, 1280]), torch.device("cpu"))


def test_compiled_step_is_deterministic_and_grouping_free(setup, compile_everything):
    engine = setup.engine("norm")
    cfg = FinetuneConfig(lam=0.9, steps=3, views=2)
    whole = run(engine, setup, range(N_EPISODES), cfg)
    again = run(engine, setup, range(N_EPISODES), cfg)
    np.testing.assert_array_equal(again.loss_curve, whole.loss_curve)  # same seed, same bits
    parts = [run(engine, setup, range(i, min(i + 4, N_EPISODES)), cfg)
             for i in range(0, N_EPISODES, 4)]
    assert engine.compiled_step and not fused._failed
    np.testing.assert_array_equal(np.concatenate([p.accuracy for p in parts]), whole.accuracy)
    np.testing.assert_allclose(np.concatenate([p.loss_after for p in parts]), whole.loss_after,
                               rtol=1e-5)
