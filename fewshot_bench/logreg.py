"""L2-regularised multinomial logistic regression on frozen support features, many episodes at once.

The few-shot evaluation of the SCHaNe authors (GLA-IR/SCHaNe, ``engine.fewshot_eval``) and
of RFS (Tian et al., ECCV 2020): fit scikit-learn's ``LogisticRegression(C=1, lbfgs,
max_iter=1000)`` on the support features of one episode, predict its queries. That is the
reference here (``solver="sklearn"``, one fit per episode); ``solver="torch"`` (default)
minimises the same objective for a batch of episodes together, to full precision:

    min_{W, b}  1/2 ||W||^2 + C * sum_i w_i * CE(W x_i + b, y_i)     (b is not penalised)

Why it is fast: the optimal W lies in the row space of the support features X [n, D]
(any component outside it only adds to the penalty), so with the thin SVD X = U S V^T and
W = B V^T the problem is the same regression on the n-dimensional features Z = U S, with
the same penalty 1/2 ||B||^2. n (support images x views) is far below D, so a damped Newton
method with the exact Hessian converges in a few batched steps; the queries are scored as
(X_q V) B + b. Two classes: scikit-learn fits the binary (sigmoid) model, which equals the
two-class softmax model with C halved (the penalty of W = [w/2, -w/2] is ||w||^2 / 4).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["SOLVERS", "fit_predict", "fit_predict_sklearn", "fit_predict_torch"]

SOLVERS = ("torch", "sklearn")
MAX_NEWTON_STEPS = 100
LINE_SEARCH_STEPS = 20  # halvings of a Newton step before an episode counts as converged
# an episode stops when its gradient (max abs) is below this, relative to C * n (scikit-learn
# stops at 1e-4 on its own scale), or when no step decreases its objective any more
GRAD_TOL = 1e-9
EPISODE_CHUNK = 64  # episodes whose Hessians are held at once (64 x 380^2 doubles at 5-shot)


def fit_predict(support: Tensor, labels: Tensor, query: Tensor, n_classes: int, *,
                C: float = 1.0, solver: str = "torch", weights: Tensor | None = None) -> Tensor:
    """Predicted query classes [G, Q] for support features [G, n, D] with labels [G, n]
    (0..n_classes-1) and query features [G, Q, D]. `weights` [G, n] (0/1) drops padded
    support rows of imbalanced episodes."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown logistic-regression solver {solver!r}: {', '.join(SOLVERS)}")
    if not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a positive finite number, got {C!r}")
    if solver == "sklearn":
        return fit_predict_sklearn(support, labels, query, n_classes, C=C, weights=weights)
    return torch.cat([
        fit_predict_torch(support[i:i + EPISODE_CHUNK], labels[i:i + EPISODE_CHUNK],
                          query[i:i + EPISODE_CHUNK], n_classes, C=C,
                          weights=None if weights is None else weights[i:i + EPISODE_CHUNK])
        for i in range(0, len(support), EPISODE_CHUNK)])


def fit_predict_sklearn(support: Tensor, labels: Tensor, query: Tensor, n_classes: int, *,
                        C: float = 1.0, weights: Tensor | None = None) -> Tensor:
    """The reference: scikit-learn's lbfgs, one episode at a time, as the authors call it."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    preds = []
    for g in range(len(support)):
        keep = slice(None) if weights is None else weights[g].bool().cpu().numpy()
        x = support[g].detach().double().cpu().numpy()[keep]
        y = labels[g].cpu().numpy()[keep]
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        pred = clf.predict(query[g].detach().double().cpu().numpy())
        preds.append(torch.as_tensor(np.asarray(pred, dtype=np.int64)))
    return torch.stack(preds).to(support.device)


def fit_predict_torch(support: Tensor, labels: Tensor, query: Tensor, n_classes: int, *,
                      C: float = 1.0, weights: Tensor | None = None) -> Tensor:
    """Batched exact solve (float64): reduce to the support's row space, then Newton."""
    dev = support.device
    x = support.detach().double()
    g, n, _ = x.shape
    w = (torch.ones(g, n, dtype=torch.float64, device=dev) if weights is None
         else weights.detach().double())
    x = x * (w > 0).unsqueeze(-1)  # padded rows: zero features and zero weight
    u, s, vh = torch.linalg.svd(x, full_matrices=False)  # u [G,n,r], s [G,r], vh [G,r,D]
    z = u * s.unsqueeze(1)  # [G, n, r]
    zq = query.detach().double() @ vh.transpose(1, 2)  # [G, Q, r]
    c = C / 2.0 if n_classes == 2 else C  # sklearn's binary model (module docstring)
    b, bias = _newton(z, labels.to(dev), w, n_classes, c)
    scores = zq @ b + bias.unsqueeze(1)
    pred = scores.argmax(-1)
    bad = ~torch.isfinite(scores).flatten(1).all(1)
    if bool(bad.any()):  # never seen; the reference solver keeps such an episode correct
        pred[bad] = fit_predict_sklearn(support[bad], labels[bad], query[bad], n_classes, C=C,
                                        weights=None if weights is None else weights[bad])
    return pred


def _objective(z: Tensor, y1: Tensor, w: Tensor, c: float, b: Tensor, bias: Tensor) -> Tensor:
    """1/2 ||B||^2 + c sum_i w_i CE, per episode [G] (B [G, r, K], bias [G, K])."""
    logits = z @ b + bias.unsqueeze(1)
    ce = torch.logsumexp(logits, -1) - (logits * y1).sum(-1)
    return 0.5 * b.pow(2).sum((1, 2)) + c * (w * ce).sum(1)


def _newton(z: Tensor, labels: Tensor, w: Tensor, k: int, c: float) -> tuple[Tensor, Tensor]:
    """Minimise the objective over B [G, r, K] and bias [G, K] by damped Newton steps with
    a per-episode backtracking line search (Armijo); the Hessian is exact."""
    g, n, r = z.shape
    y1 = torch.nn.functional.one_hot(labels, k).double()  # [G, n, K]
    zt = torch.cat([z, torch.ones(g, n, 1, dtype=z.dtype, device=z.device)], -1)  # [G, n, r+1]
    p = r + 1
    theta = torch.zeros(g, k, p, dtype=z.dtype, device=z.device)  # class-major [B^T | bias]
    # the penalty acts on B only; the bias has one flat direction (a constant added to every
    # class), which a tiny ridge removes without moving the predictions
    ridge = torch.ones(p, dtype=z.dtype, device=z.device)
    ridge[-1] = 1e-10
    ridge = ridge.repeat(k)  # [K * p]
    scale = c * w.sum(1).clamp_min(1)  # [G]

    def split(t: Tensor) -> tuple[Tensor, Tensor]:
        return t[..., :-1].transpose(-1, -2), t[..., -1]

    f = _objective(z, y1, w, c, *split(theta))
    active = torch.ones(g, dtype=torch.bool, device=z.device)  # episodes still improving
    for _ in range(MAX_NEWTON_STEPS):
        logits = torch.einsum("gnp,gkp->gnk", zt, theta)
        prob = torch.softmax(logits, -1)
        resid = (prob - y1) * (c * w).unsqueeze(-1)  # [G, n, K]
        grad = torch.einsum("gnk,gnp->gkp", resid, zt)
        grad[..., :-1] += theta[..., :-1]
        grad = grad.reshape(g, k * p)
        active &= grad.abs().amax(1) / scale >= GRAD_TOL
        if not bool(active.any()):
            break
        # H = sum_i c w_i (diag(p_i) - p_i p_i^T) (x) zt_i zt_i^T + penalty
        cw = (c * w).unsqueeze(-1)
        m = (prob * cw.sqrt()).unsqueeze(-1) * zt.unsqueeze(2)  # [G, n, K, p]
        m = m.reshape(g, n, k * p)
        hess = -m.transpose(1, 2) @ m
        block = torch.einsum("gnk,gna,gnb->gkab", prob * cw, zt, zt)  # diag(p) part
        idx = torch.arange(k, device=z.device)
        hess = hess.view(g, k, p, k, p)
        hess[:, idx, :, idx, :] += block.transpose(0, 1)
        hess = hess.view(g, k * p, k * p) + torch.diag_embed(ridge).unsqueeze(0)
        # H is positive definite (the penalty adds I to the B block, the ridge the rest):
        # Cholesky; an episode where it fails (rounding) takes a plain gradient step
        chol, info = torch.linalg.cholesky_ex(hess)
        good = info == 0
        chol = torch.where(good.view(g, 1, 1), chol, torch.eye(k * p, dtype=z.dtype, device=z.device))
        step = -torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
        step = torch.where(good.view(g, 1), step, -grad).view(g, k, p)
        slope = (grad * step.reshape(g, k * p)).sum(1)  # < 0
        # backtracking (Armijo) per episode; one that cannot decrease f any more has
        # reached float precision and stops, instead of holding the others back
        t = torch.ones(g, dtype=z.dtype, device=z.device)
        done = ~active
        moved = torch.zeros(g, dtype=torch.bool, device=z.device)
        for _ in range(LINE_SEARCH_STEPS):
            cand = theta + t.view(g, 1, 1) * step
            fc = _objective(z, y1, w, c, *split(cand))
            ok = ~done & (fc <= f + 1e-4 * t * slope)
            theta = torch.where(ok.view(g, 1, 1), cand, theta)
            f = torch.where(ok, fc, f)
            moved |= ok
            done |= ok
            if bool(done.all()):
                break
            t = torch.where(done, t, t / 2)
        active &= moved
    return split(theta)
