"""logreg: the batched torch solver against scikit-learn (the reference), its edge cases,
and the `logreg` method of `bench run`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot_bench.logreg import fit_predict, fit_predict_sklearn, fit_predict_torch

from cli_helpers import explain, invoke


def episodes(seed, g, ways, per_class, queries, dim, spread=0.6):
    """Random episodes: unit-norm features around one random centre per class."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(g, ways, dim, generator=gen)
    ys = torch.arange(ways).repeat_interleave(per_class).expand(g, -1)
    yq = torch.arange(ways).repeat_interleave(queries).expand(g, -1)
    idx = torch.arange(g)[:, None]

    def draw(y):
        return F.normalize(spread * centres[idx, y] + torch.randn(*y.shape, dim, generator=gen), dim=-1)

    return draw(ys), ys, draw(yq), yq


@pytest.mark.parametrize("ways,per_class,dim", [(5, 1, 64), (5, 3, 64), (5, 5, 256), (3, 4, 16)])
def test_torch_solver_agrees_with_sklearn(ways, per_class, dim):
    xs, ys, xq, _ = episodes(ways * 10 + per_class, 24, ways, per_class, 15, dim)
    ours = fit_predict(xs, ys, xq, ways)
    ref = fit_predict(xs, ys, xq, ways, solver="sklearn")
    assert ours.shape == ref.shape == xq.shape[:2] and ours.dtype == torch.long
    assert (ours == ref).float().mean() >= 0.99


def test_torch_solver_reaches_sklearns_optimum():
    """Same objective: the coefficients that sklearn finds, mapped to query logits, give
    the same decision values as ours up to sklearn's tolerance."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, xq, _ = episodes(3, 1, 4, 3, 10, 32)
    clf = LogisticRegression(C=0.7, solver="lbfgs", max_iter=10000, tol=1e-12)
    clf.fit(xs[0].double().numpy(), ys[0].numpy())
    ref = clf.decision_function(xq[0].double().numpy())
    ref = ref - ref.mean(1, keepdims=True)  # softmax logits are defined up to a constant
    import fewshot_bench.logreg as lr

    x = xs.double()
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    b, bias = lr._newton(u * s.unsqueeze(1), ys, torch.ones(1, len(ys[0]), dtype=torch.float64), 4, 0.7)
    ours = ((xq.double() @ vh.transpose(1, 2)) @ b + bias.unsqueeze(1))[0].numpy()
    ours = ours - ours.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_two_classes_match_sklearns_binary_model():
    xs, ys, xq, _ = episodes(5, 30, 2, 3, 20, 24, spread=0.3)
    ours = fit_predict(xs, ys, xq, 2, C=2.0)
    ref = fit_predict(xs, ys, xq, 2, C=2.0, solver="sklearn")
    assert (ours == ref).float().mean() >= 0.99


def test_weights_drop_padded_rows_exactly():
    """Imbalanced episodes pad the support; weight-0 rows must be as if removed."""
    xs, ys, xq, _ = episodes(7, 6, 3, 4, 5, 20)
    w = torch.ones(6, 12)
    w[:, [3, 7]] = 0  # the last image of classes 0 and 1
    junk = xs.clone()
    junk[:, [3, 7]] = 5.0  # whatever a padded row holds
    ours = fit_predict_torch(junk, ys, xq, 3, weights=w)
    keep = w[0].bool()
    alone = fit_predict_torch(xs[:, keep], ys[:, keep], xq, 3)
    assert torch.equal(ours, alone)
    ref = fit_predict_sklearn(junk, ys, xq, 3, weights=w)
    assert (ours == ref).float().mean() >= 0.99


def test_chunking_does_not_change_predictions(monkeypatch):
    import fewshot_bench.logreg as lr

    xs, ys, xq, _ = episodes(9, 10, 5, 2, 6, 32)
    whole = fit_predict(xs, ys, xq, 5)
    monkeypatch.setattr(lr, "EPISODE_CHUNK", 3)
    assert torch.equal(fit_predict(xs, ys, xq, 5), whole)


def test_bad_solver_and_C_are_refused():
    xs, ys, xq, _ = episodes(1, 2, 2, 1, 2, 4)
    with pytest.raises(ValueError, match="unknown logistic-regression solver 'newton'"):
        fit_predict(xs, ys, xq, 2, solver="newton")
    for c in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="C must be"):
            fit_predict(xs, ys, xq, 2, C=c)


# -- the method in a run ----------------------------------------------------------------


def test_logreg_method_in_a_run_matches_sklearn(tiny, tmp_path, monkeypatch):
    """`logreg` needs no training: no losses; the torch solver's accuracies equal those of
    the scikit-learn reference on the same episodes (the tiny run has few queries, so any
    disagreement would show)."""
    from fewshot_bench.runner import run

    monkeypatch.chdir(tmp_path)
    base = dict(methods=("protonet", "logreg"), shots=2, episodes=6)
    a = run(tiny.config(tmp_path / "ep", tmp_path / "a", **base), progress=False,
            echo=lambda m: None).rows
    b = run(tiny.config(tmp_path / "ep", tmp_path / "b", logreg_solver="sklearn", **base),
            progress=False, echo=lambda m: None).rows
    la, lb = (r[r.method == "logreg"].set_index("episode") for r in (a, b))
    assert (la["status"] == "ok").all() and la["loss_before"].isna().all()
    agree = (la["accuracy"] - lb["accuracy"]).abs().lt(1e-9).mean()
    assert agree >= 5 / 6
    assert la["accuracy"].between(0, 1).all()


@pytest.mark.parametrize("extra,words", [
    (["--logreg-solver", "newton"], "'newton' is not one of 'torch', 'sklearn'"),
    (["--logreg-c", "0"], "--logreg-c must be positive"),
    (["--logreg-c", "nan"], "--logreg-c must be a finite number"),
])
def test_bad_logreg_options_exit_2(tiny, tmp_path, extra, words):
    result = invoke(tiny.args(tmp_path / "ep", tmp_path / "out", "--methods", "logreg", *extra))
    assert result.exit_code == 2, explain(result)
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
