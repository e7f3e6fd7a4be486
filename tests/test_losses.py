"""Pin the SCHaNe / SupCon / HCL losses against slow float64 loops and every edge case in
shared/reference/schane.md (no positives, single class, stability, batching, gradients)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from fewshot_bench.losses import (
    HCLLoss,
    SCHaNeLoss,
    SCHaNePerPosLoss,
    SupConLoss,
    combined_loss,
    hcl_loss,
    reference_schane_perpos_loss,
    schane_loss,
    schane_perpos_loss,
    supcon_loss,
)


# --------------------------------------------------------------------------- helpers


def make_batch(seed, batch, n_classes, dim=8, dtype=torch.float64, shuffle_labels=True):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    labels = torch.arange(batch) % n_classes
    if shuffle_labels:
        labels = labels[torch.randperm(batch, generator=g)]
    return z, labels


def reference_supcon_loss(z, labels, tau):
    """SupCon L_out, float64 loop."""
    zz, yy = z.detach().double().tolist(), labels.tolist()
    n = len(yy)
    sim = lambda i, j: sum(a * b for a, b in zip(zz[i], zz[j])) / tau  # noqa: E731
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and yy[p] == yy[i]]
        if not positives:
            continue
        den = sum(math.exp(sim(i, a)) for a in range(n) if a != i)
        per_anchor.append(sum(-math.log(math.exp(sim(i, p)) / den) for p in positives) / len(positives))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def reference_hcl_loss(z, ids, tau, beta):
    """Robinson et al.'s form (tau+ = 0), written independently of the SCHaNe oracle:
    reweight_k = e^{beta s_k} / mean_k e^{beta s_k}; Ng = mean_k(reweight_k e^{s_k});
    l = -log(e^{s_p} / (e^{s_p} + |N| Ng))."""
    zz, ids = z.detach().double().tolist(), ids.tolist()
    n = len(ids)
    sim = lambda i, j: sum(a * b for a, b in zip(zz[i], zz[j])) / tau  # noqa: E731
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and ids[p] == ids[i]]
        negatives = [k for k in range(n) if ids[k] != ids[i]]
        if not positives:
            continue
        imp = [math.exp(beta * sim(i, k)) for k in negatives]
        mean_imp = sum(imp) / len(imp)
        ng = sum(w / mean_imp * math.exp(sim(i, k)) for w, k in zip(imp, negatives)) / len(negatives)
        terms = [-math.log(math.exp(sim(i, p)) / (math.exp(sim(i, p)) + len(negatives) * ng)) for p in positives]
        per_anchor.append(sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def unweighted_form(z, labels, tau):
    """beta = 0 by hand: -log(e^{s_ip} / (e^{s_ip} + sum_{k in N(i)} e^{s_ik})), plain exp."""
    s = (z @ z.T / tau).double()
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    neg_sum = (torch.exp(s) * (~same)).sum(dim=1, keepdim=True)
    pair = -torch.log(torch.exp(s) / (torch.exp(s) + neg_sum))
    n_pos = pos.sum(1)
    per_anchor = (pair * pos).sum(1)[n_pos > 0] / n_pos[n_pos > 0]
    return per_anchor.mean()


def separated_clusters():
    """Two tight classes of 4 (cos ~ 1 within), at cos ~ 0.3 to each other; float64."""
    g = torch.Generator().manual_seed(3)
    a, r = F.normalize(torch.randn(2, 16, generator=g, dtype=torch.float64), dim=-1)
    b = 0.3 * a + math.sqrt(1 - 0.3**2) * F.normalize(r - (r @ a) * a, dim=-1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    noise = 1e-3 * torch.randn(8, 16, generator=g, dtype=torch.float64)
    z = F.normalize(torch.where(y[:, None] == 0, a, b) + noise, dim=-1)
    return z, y


def rel_err(a, b):
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) / max(abs(b), 1e-12)


# (seed, batch, classes, beta, tau); the last ones have singleton classes via random labels
CASES = [
    (0, 8, 2, 1.0, 0.1),
    (1, 12, 3, 0.0, 0.1),
    (2, 16, 4, 2.0, 0.05),
    (3, 10, 5, 0.5, 0.5),
    (4, 20, 5, 1.0, 0.2),
    (5, 6, 3, 2.0, 1.0),
    (6, 24, 6, 0.0, 0.07),
]


# ------------------- vs the loop: schane_perpos_loss (the former schane), SupCon, HCL


@pytest.mark.parametrize("seed,batch,n_classes,beta,tau", CASES)
def test_perpos_matches_loop_float64(seed, batch, n_classes, beta, tau):
    z, y = make_batch(seed, batch, n_classes)
    got = schane_perpos_loss(z, y, tau=tau, beta=beta)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert rel_err(got, reference_schane_perpos_loss(z, y, tau, beta)) < 1e-6


@pytest.mark.parametrize("seed,batch,n_classes,beta,tau", CASES)
def test_perpos_matches_loop_float32(seed, batch, n_classes, beta, tau):
    z, y = make_batch(seed, batch, n_classes, dtype=torch.float32)
    got = schane_perpos_loss(z, y, tau=tau, beta=beta)
    assert got.dtype == torch.float32
    assert rel_err(got, reference_schane_perpos_loss(z, y, tau, beta)) < 1e-4


@pytest.mark.parametrize("seed", range(4))
def test_perpos_random_labels_with_singletons(seed):
    g = torch.Generator().manual_seed(100 + seed)
    z = F.normalize(torch.randn(14, 5, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, 6, (14,), generator=g)
    for beta in (0.0, 1.0, 2.0):
        assert rel_err(schane_perpos_loss(z, y, tau=0.1, beta=beta), reference_schane_perpos_loss(z, y, 0.1, beta)) < 1e-6


def test_reference_oracle_closed_form():
    # identical embeddings: every s equal, w = 1, l_i = log(1 + |N(i)|)
    z = F.normalize(torch.ones(6, 3, dtype=torch.float64), dim=-1)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert reference_schane_perpos_loss(z, y, 0.1, 1.0) == pytest.approx(math.log(4.0), rel=1e-12)


@pytest.mark.parametrize("seed,tau", [(0, 0.1), (1, 0.05), (2, 0.5)])
def test_supcon_matches_loop(seed, tau):
    z, y = make_batch(seed, 12, 3)
    assert rel_err(supcon_loss(z, y, tau=tau), reference_supcon_loss(z, y, tau)) < 1e-6
    z32 = z.float()
    assert rel_err(supcon_loss(z32, y, tau=tau), reference_supcon_loss(z32, y, tau)) < 1e-4


@pytest.mark.parametrize("seed,beta,tau", [(0, 1.0, 0.1), (1, 0.0, 0.2), (2, 2.0, 0.05)])
def test_hcl_matches_robinson_loop(seed, beta, tau):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(12, 6, generator=g, dtype=torch.float64), dim=-1)
    ids = torch.arange(6).repeat(2)  # two views of six images
    got = hcl_loss(z, ids, tau=tau, beta=beta)
    assert rel_err(got, reference_hcl_loss(z, ids, tau, beta)) < 1e-6
    # it is the SCHaNe kernel on instance ids, and differs from SCHaNe on class labels;
    # with two views (one positive each) the authors' form and the per-positive one agree
    assert torch.equal(got, schane_loss(z, ids, tau=tau, beta=beta))
    torch.testing.assert_close(got, schane_perpos_loss(z, ids, tau=tau, beta=beta))
    classes = ids % 3
    assert not torch.allclose(got, schane_loss(z, classes, tau=tau, beta=beta))


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("fn", ["schane", "supcon", "hcl"])
def test_no_positives_gives_zero_with_zero_grad(fn):
    loss_fn = {"schane": schane_perpos_loss, "supcon": supcon_loss, "hcl": hcl_loss}[fn]
    z, _ = make_batch(0, 5, 5, dtype=torch.float32)
    z.requires_grad_(True)
    y = torch.arange(5)  # 1-shot, one view per image: nobody has a positive
    loss = loss_fn(z, y)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad is not None and torch.equal(z.grad, torch.zeros_like(z))
    # batch of one sample, and batched episodes, too
    assert loss_fn(z[:1].detach(), y[:1]).item() == 0.0
    zb = torch.stack([z.detach(), z.detach()]).requires_grad_(True)
    lb = loss_fn(zb, torch.stack([y, y]))
    lb.sum().backward()
    assert torch.equal(lb, torch.zeros(2)) and torch.equal(zb.grad, torch.zeros_like(zb))


def test_anchors_without_positive_are_excluded():
    z, _ = make_batch(3, 7, 1, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # anchors 5 and 6 have no positive
    got = float(schane_perpos_loss(z, y, tau=0.1, beta=1.0))
    ref = reference_schane_perpos_loss(z, y, 0.1, 1.0)
    assert rel_err(got, ref) < 1e-9
    assert abs(got - ref * 5 / 7) > 1e-3  # i.e. not "counted as zero"
    # the singletons still act as negatives: dropping them changes the loss
    assert abs(got - float(schane_perpos_loss(z[:5], y[:5], tau=0.1))) > 1e-3
    got_sc = float(supcon_loss(z, y, tau=0.1))
    assert rel_err(got_sc, reference_supcon_loss(z, y, 0.1)) < 1e-9


def test_single_class_zero_warns_and_is_graph_connected():
    z, _ = make_batch(0, 6, 1, dtype=torch.float32)
    z.requires_grad_(True)
    y = torch.zeros(6, dtype=torch.long)
    with pytest.warns(UserWarning, match="single class"):
        loss = schane_perpos_loss(z, y)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert reference_schane_perpos_loss(z, y, 0.1, 1.0) == 0.0
    with pytest.warns(UserWarning):
        assert hcl_loss(z.detach(), y).item() == 0.0
    # SupCon is well defined without negatives: no warning, matches its loop
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = supcon_loss(z.detach().double(), y)
    assert rel_err(sc, reference_supcon_loss(z, y, 0.1)) < 1e-6 and sc.item() > 0


def test_single_class_error_mode_and_bad_mode():
    z, _ = make_batch(0, 4, 1)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="single class"):
        schane_perpos_loss(z, y, single_class="error")
    with pytest.raises(ValueError, match="single class"):
        combined_loss(torch.zeros(4, 3, dtype=torch.float64), z, y, single_class="error")
    with pytest.raises(ValueError, match="single_class"):
        schane_perpos_loss(z, torch.tensor([0, 0, 1, 1]), single_class="nan")
    with pytest.raises(ValueError):
        SCHaNePerPosLoss(single_class="ignore")
    # no positives at all is not a single-class problem: no warning, no error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert schane_perpos_loss(z[:1], y[:1], single_class="error").item() == 0.0


def test_single_class_episode_in_a_batch_of_episodes():
    z0, y0 = make_batch(0, 6, 2)
    z1, _ = make_batch(1, 6, 1)
    y1 = torch.zeros(6, dtype=torch.long)
    with pytest.warns(UserWarning, match=r"\[1\]"):
        out = schane_perpos_loss(torch.stack([z0, z1]), torch.stack([y0, y1]))
    assert out[1].item() == 0.0
    assert torch.allclose(out[0], schane_perpos_loss(z0, y0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed,tau", [(0, 0.1), (1, 0.5), (2, 0.07)])
def test_beta_zero_equals_unweighted_form(seed, tau):
    z, y = make_batch(seed, 15, 4)
    got = schane_perpos_loss(z, y, tau=tau, beta=0.0)
    assert rel_err(got, unweighted_form(z, y, tau)) < 1e-10
    # and beta > 0 really is different
    assert rel_err(schane_perpos_loss(z, y, tau=tau, beta=2.0), unweighted_form(z, y, tau)) > 1e-4


@pytest.mark.parametrize("fn", ["schane", "supcon", "hcl"])
def test_permutation_invariance(fn):
    loss_fn = {"schane": schane_perpos_loss, "supcon": supcon_loss, "hcl": hcl_loss}[fn]
    z, y = make_batch(7, 18, 4)
    perm = torch.randperm(18, generator=torch.Generator().manual_seed(1))
    assert rel_err(loss_fn(z[perm], y[perm], tau=0.1), loss_fn(z, y, tau=0.1)) < 1e-12
    # relabelling the classes does not matter either
    assert rel_err(loss_fn(z, (y * 7 + 3), tau=0.1), loss_fn(z, y, tau=0.1)) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_identical_embeddings_finite(dtype):
    z = F.normalize(torch.ones(8, 16), dim=-1).to(dtype).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for fn in (schane_loss, schane_perpos_loss):
        for beta in (0.0, 1.0, 6.0):
            loss = fn(z, y, tau=0.05, beta=beta)
            (grad,) = torch.autograd.grad(loss, z)
            assert torch.isfinite(loss) and torch.isfinite(grad).all()
            # s all equal -> w = 1, pos = e^s, Ng = |N| e^s: l_i = log(1 + |N(i)|) = log 7
            assert loss.item() == pytest.approx(math.log(7.0), rel=1e-5)
    for loss in (supcon_loss(z, y, tau=0.05), hcl_loss(z, y, tau=0.05)):
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_well_separated_clusters_large_beta_float32():
    # positives almost identical (cos ~ 1), negatives at cos ~ 0.3: with tau = 0.05 and
    # beta = 6 the masked (positive) entries of log w + s sit ~95 above the negatives' row
    # max, so a masked log-sum-exp that exponentiates them overflows float32 (inf * 0 = NaN).
    z, y = separated_clusters()
    z32 = z.float().requires_grad_(True)
    for beta in (1.0, 6.0):
        ref = reference_schane_perpos_loss(z, y, 0.05, beta)
        assert 1e-7 < ref < 1e-4  # tiny but well resolved by the float64 loop
        assert rel_err(schane_perpos_loss(z, y, tau=0.05, beta=beta), ref) < 1e-6
        loss = schane_perpos_loss(z32, y, tau=0.05, beta=beta)
        (grad,) = torch.autograd.grad(loss, z32)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert rel_err(loss, reference_schane_perpos_loss(z32, y, 0.05, beta)) < 1e-4
    loss = supcon_loss(z32, y, tau=0.05)
    assert rel_err(loss, reference_supcon_loss(z32, y, 0.05)) < 1e-4


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_autocast_tau_005_float32_inside(amp_dtype):
    z32, y = make_batch(11, 32, 4, dim=64, dtype=torch.float32)
    ref32 = schane_perpos_loss(z32, y, tau=0.05, beta=2.0)
    z_low = z32.to(amp_dtype).requires_grad_(True)  # what a low-precision encoder hands over
    with torch.autocast("cpu", dtype=amp_dtype):
        out = schane_perpos_loss(z_low, y, tau=0.05, beta=2.0)
        sc = supcon_loss(z_low, y, tau=0.05)
        hc = hcl_loss(z_low, y, tau=0.05, beta=2.0)
    out.backward()
    assert out.dtype == torch.float32 and sc.dtype == torch.float32 and hc.dtype == torch.float32
    assert torch.isfinite(out) and torch.isfinite(sc) and torch.isfinite(hc)
    assert torch.isfinite(z_low.grad).all()
    # computed in float32 inside: same number as the float32 call on the rounded input ...
    plain = schane_perpos_loss(z_low.detach().float(), y, tau=0.05, beta=2.0)
    assert rel_err(out, plain) < 1e-6
    # ... and close to the full-precision loss (only the input rounding differs)
    assert rel_err(out, ref32) < 2e-2


def test_batched_equals_per_episode():
    eps = [make_batch(s, 12, c) for s, c in [(0, 2), (1, 3), (2, 4), (3, 6)]]
    z = torch.stack([e[0] for e in eps])
    y = torch.stack([e[1] for e in eps])
    for kw in ({"tau": 0.1, "beta": 1.0}, {"tau": 0.05, "beta": 0.0}, {"tau": 0.2, "beta": 2.0}):
        out = schane_perpos_loss(z, y, **kw)
        assert out.shape == (4,)
        single = torch.stack([schane_perpos_loss(z[e], y[e], **kw) for e in range(4)])
        assert torch.allclose(out, single, rtol=1e-12, atol=0)
    for fn in (supcon_loss, hcl_loss):
        out = fn(z, y, tau=0.1)
        assert torch.allclose(out, torch.stack([fn(z[e], y[e], tau=0.1) for e in range(4)]), rtol=1e-12, atol=0)
    # gradients per episode are those of the separate calls
    zb = z.clone().requires_grad_(True)
    schane_perpos_loss(zb, y).sum().backward()
    for e in range(4):
        ze = z[e].clone().requires_grad_(True)
        schane_perpos_loss(ze, y[e]).backward()
        assert torch.allclose(zb.grad[e], ze.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.autograd.gradcheck(lambda v: schane_perpos_loss(F.normalize(v, dim=-1), y, tau=0.5, beta=1.0), (x,))
    assert torch.autograd.gradcheck(lambda v: supcon_loss(F.normalize(v, dim=-1), y, tau=0.5), (x,))
    assert torch.autograd.gradcheck(lambda v: hcl_loss(F.normalize(v, dim=-1), y % 3, tau=0.5, beta=2.0), (x,))
    xb = torch.randn(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    yb = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 0, 1, 1]])
    assert torch.autograd.gradcheck(lambda v: schane_perpos_loss(F.normalize(v, dim=-1), yb, tau=0.3), (xb,))


def test_detach_weights_changes_gradient_not_value():
    z, y = make_batch(5, 10, 3)
    za = z.clone().requires_grad_(True)
    zb = z.clone().requires_grad_(True)
    la = schane_perpos_loss(za, y, beta=1.0, detach_weights=False)
    lb = schane_perpos_loss(zb, y, beta=1.0, detach_weights=True)
    assert torch.equal(la, lb)
    la.backward()
    lb.backward()
    assert not torch.allclose(za.grad, zb.grad, rtol=1e-3, atol=1e-6)
    # with beta = 0 the weights are constant (all 1), so the two gradients agree
    zc = z.clone().requires_grad_(True)
    zd = z.clone().requires_grad_(True)
    schane_perpos_loss(zc, y, beta=0.0).backward()
    schane_perpos_loss(zd, y, beta=0.0, detach_weights=True).backward()
    assert torch.allclose(zc.grad, zd.grad, rtol=1e-10, atol=1e-12)


def test_combined_loss():
    z, y = make_batch(2, 10, 3)
    logits = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # lam = 0 is exactly CE and never looks at z
    z_nan = torch.full_like(z, float("nan"))
    assert torch.equal(combined_loss(logits, z_nan, y, lam=0.0), F.cross_entropy(logits, y))
    # lam = 1 is exactly SCHaNe and never looks at the logits
    assert torch.equal(
        combined_loss(torch.full_like(logits, float("nan")), z, y, lam=1.0, tau=0.2, beta=2.0),
        schane_loss(z, y, tau=0.2, beta=2.0),
    )
    mixed = combined_loss(logits, z, y, lam=0.9)
    expect = 0.1 * F.cross_entropy(logits, y) + 0.9 * schane_loss(z, y)
    assert torch.allclose(mixed, expect, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="lam"):
        combined_loss(logits, z, y, lam=1.5)


def test_combined_loss_batched():
    eps = [make_batch(s, 9, 3) for s in range(3)]
    z = torch.stack([e[0] for e in eps])
    y = torch.stack([e[1] for e in eps])
    logits = torch.randn(3, 9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for lam in (0.0, 0.5, 0.9, 1.0):
        out = combined_loss(logits, z, y, lam=lam)
        assert out.shape == (3,)
        single = torch.stack([combined_loss(logits[e], z[e], y[e], lam=lam) for e in range(3)])
        assert torch.allclose(out, single, rtol=1e-12, atol=0)


def test_input_validation():
    z, y = make_batch(0, 6, 2)
    with pytest.raises(ValueError, match="labels"):
        schane_perpos_loss(z, y[:5])
    with pytest.raises(ValueError, match="integer"):
        schane_perpos_loss(z, y.double())
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        schane_perpos_loss(z[0], y[:1])
    with pytest.raises(ValueError, match="tau"):
        supcon_loss(z, y, tau=0.0)
    with pytest.raises(ValueError, match="instance_ids"):
        hcl_loss(z, y[:4])
    with pytest.raises(ValueError, match="logits"):
        combined_loss(torch.zeros(6, 2, 2), z, y)


def test_modules_match_functions():
    z, y = make_batch(4, 12, 3)
    m = SCHaNePerPosLoss(tau=0.2, beta=2.0, detach_weights=True)
    assert torch.equal(m(z, y), schane_perpos_loss(z, y, tau=0.2, beta=2.0, detach_weights=True))
    assert torch.equal(SupConLoss(tau=0.2)(z, y), supcon_loss(z, y, tau=0.2))
    assert torch.equal(HCLLoss(tau=0.2, beta=0.5)(z, y), hcl_loss(z, y, tau=0.2, beta=0.5))
    assert "beta=2.0" in repr(m)


def test_combined_loss_dispatches_to_each_contrastive_term():
    """combined_loss's second term is the named loss, with the same lambda weighting."""
    from fewshot_bench.losses import combined_loss, hcl_loss, supcon_loss

    g = torch.Generator().manual_seed(3)
    z = torch.nn.functional.normalize(torch.randn(2, 12, 8, generator=g), dim=-1)
    labels = torch.arange(3).repeat_interleave(4).expand(2, -1)
    instances = torch.arange(6).repeat_interleave(2).expand(2, -1)
    logits = torch.randn(2, 12, 3, generator=g)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(-1)
    for kind, term in [("schane", schane_loss(z, labels, tau=0.2, beta=1.5)),
                       ("schane-perpos", schane_perpos_loss(z, labels, tau=0.2, beta=1.5)),
                       ("supcon", supcon_loss(z, labels, tau=0.2)),
                       ("hcl", hcl_loss(z, instances, tau=0.2, beta=1.5))]:
        got = combined_loss(logits, z, labels, lam=0.7, tau=0.2, beta=1.5, contrastive=kind,
                            instance_ids=instances)
        torch.testing.assert_close(got, 0.3 * ce + 0.7 * term)
    with pytest.raises(ValueError, match="instance_ids"):
        combined_loss(logits, z, labels, contrastive="hcl")
    with pytest.raises(ValueError, match="unknown contrastive"):
        combined_loss(logits, z, labels, contrastive="triplet")


# -- the sample mask of imbalanced episodes ------------------------------------------------
@pytest.mark.parametrize("term", ["schane", "schane-perpos", "supcon", "hcl"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_valid_mask_equals_removing_the_samples(term, lam):
    """Masked-out samples (padding of imbalanced episodes) take no part at all: the loss
    equals the loss on the remaining samples, and their embeddings get no gradient."""
    g = torch.Generator().manual_seed(3)
    e, b, d, c = 3, 10, 6, 3
    z = F.normalize(torch.randn(e, b, d, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    labels = torch.randint(0, c, (e, b), generator=g)
    ids = torch.arange(b).div(2, rounding_mode="floor").expand(e, -1)  # 2 views per image
    logits = torch.randn(e, b, c, generator=g, dtype=torch.float64)
    valid = torch.rand(e, b, generator=g) > 0.3
    got = combined_loss(logits, z, labels, lam=lam, contrastive=term, instance_ids=ids,
                        valid=valid)
    for i in range(e):
        keep = valid[i]
        want = combined_loss(logits[i, keep], z[i, keep], labels[i, keep], lam=lam,
                             contrastive=term, instance_ids=ids[i, keep])
        torch.testing.assert_close(got[i], want)
    if lam > 0:  # lam = 0 is CE alone, which never touches z
        got.sum().backward()
        assert torch.all(z.grad[~valid] == 0)
        assert z.grad[valid].abs().sum() > 0


def test_hcl_equals_schane_when_each_class_has_one_image():
    """At 1 shot, same label = same image: HCL's view positives and all-other-instance
    negatives are SCHaNe's label positives and other-class negatives, so the two losses
    (and their gradients) coincide; a real 1-shot run shows identical numbers for both."""
    g = torch.Generator().manual_seed(5)
    z = F.normalize(torch.randn(4, 10, 8, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    images = torch.arange(5).repeat_interleave(2).expand(4, -1)  # 5 images x 2 views
    labels = images * 7 % 5  # one image per class, labels a permutation of the images
    a = schane_loss(z, labels, tau=0.1, beta=1.0)
    (ga,) = torch.autograd.grad(a.sum(), z)
    b = hcl_loss(z, images, tau=0.1, beta=1.0)
    (gb,) = torch.autograd.grad(b.sum(), z)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ga, gb)



# -- schane_loss, the authors' form (GLA-IR/SCHaNe): mean of the positives inside the log --


def authors_loop(z, labels, tau, beta, detach_weights=False):
    """The authors' SCHaNe written from its formula, float64, plain loops over anchors,
    positives and negatives (scalar torch ops, so autograd runs through it):
    pos_i = mean_{p in P(i)} e^{s_ip}; w_ik = |N(i)| e^{beta s_ik} / sum_k' e^{beta s_ik'};
    Ng_i = sum_k w_ik e^{s_ik}; l_i = -log(pos_i / (pos_i + Ng_i)); mean over anchors with a
    positive (the authors' code would give NaN for the others). No log-sum-exp: tau >= 0.1."""
    yy = labels.tolist()
    n = len(yy)
    zero = z.sum() * 0.0  # graph-connected 0

    def sim(i, j):
        return (z[i] * z[j]).sum() / tau

    terms = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and yy[p] == yy[i]]
        negatives = [k for k in range(n) if yy[k] != yy[i]]
        if not positives:
            continue
        pos = zero
        for p in positives:
            pos = pos + torch.exp(sim(i, p))
        pos = pos / len(positives)
        if not negatives:
            terms.append(zero)
            continue
        imp = [torch.exp(beta * sim(i, k)) for k in negatives]
        total = zero
        for v in imp:
            total = total + v
        ng = zero
        for v, k in zip(imp, negatives):
            w = len(negatives) * v / total
            if detach_weights:
                w = w.detach()
            ng = ng + w * torch.exp(sim(i, k))
        terms.append(-torch.log(pos / (pos + ng)))
    if not terms:
        return zero
    out = zero
    for v in terms:
        out = out + v
    return out / len(terms)


def grad_of(fn, z):
    zz = z.detach().clone().requires_grad_(True)
    loss = fn(zz)
    (g,) = torch.autograd.grad(loss, zz)
    return loss.detach(), g


def rel_norm(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def five_way_five_shot(seed, dim=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(50, dim, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    y = torch.arange(5).repeat_interleave(5).repeat(2)  # 5 classes x 5 images, 2 views stacked
    return z, y


def uneven(seed):
    """Classes of 1, 2, 3, 5 images x 2 views, plus one single-view sample of its own class
    (an anchor without a positive, still a negative for everyone else)."""
    g = torch.Generator().manual_seed(seed)
    per_view = torch.tensor([0] + [1] * 2 + [2] * 3 + [3] * 5)
    y = torch.cat([per_view, per_view, torch.tensor([9])])
    z = F.normalize(torch.randn(len(y), 6, generator=g, dtype=torch.float64), dim=-1)
    perm = torch.randperm(len(y), generator=g)
    return z[perm], y[perm]


@pytest.mark.parametrize("case", ["5way5shot", "uneven"])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("tau", [0.1, 0.5])
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_schane_matches_loop_value_and_grad(case, detach, tau, beta):
    z, y = five_way_five_shot(0) if case == "5way5shot" else uneven(1)
    got, g_got = grad_of(lambda v: schane_loss(v, y, tau=tau, beta=beta,
                                                       detach_weights=detach), z)
    want, g_want = grad_of(lambda v: authors_loop(v, y, tau, beta, detach), z)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert rel_err(got, want) < 1e-9
    assert rel_norm(g_got, g_want) < 1e-9
    assert torch.allclose(g_got, g_want, rtol=1e-9, atol=1e-12 * float(g_want.abs().max()))


def test_schane_detach_changes_gradient_not_value():
    z, y = uneven(2)
    a, ga = grad_of(lambda v: schane_loss(v, y, beta=1.0), z)
    b, gb = grad_of(lambda v: schane_loss(v, y, beta=1.0, detach_weights=True), z)
    assert torch.equal(a, b) and rel_norm(ga, gb) > 1e-3


@pytest.mark.parametrize("beta,tau", [(0.0, 0.1), (1.0, 0.1), (2.0, 0.05), (1.0, 0.5)])
def test_schane_equals_reconstruction_with_one_positive_each(beta, tau):
    """1-shot with 2 views: every anchor has exactly one positive, the two forms coincide
    (values and gradients); with several positives they differ, the authors' being smaller."""
    g = torch.Generator().manual_seed(7)
    z = F.normalize(torch.randn(3, 10, 8, generator=g, dtype=torch.float64), dim=-1)
    y = torch.arange(5).repeat(2).expand(3, -1)  # 5 images, 2 views, one image per class
    a, ga = grad_of(lambda v: schane_loss(v, y, tau=tau, beta=beta).sum(), z)
    b, gb = grad_of(lambda v: schane_perpos_loss(v, y, tau=tau, beta=beta).sum(), z)
    assert rel_err(a, b) < 1e-12
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    for e in range(3):
        assert rel_err(schane_loss(z[e], y[e], tau=tau, beta=beta),
                       schane_perpos_loss(z[e], y[e], tau=tau, beta=beta)) < 1e-12
    z5, y5 = five_way_five_shot(1)
    authors = float(schane_loss(z5, y5, tau=tau, beta=beta))
    ours = float(schane_perpos_loss(z5, y5, tau=tau, beta=beta))
    assert authors < ours - 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_schane_never_above_reconstruction(seed):
    g = torch.Generator().manual_seed(50 + seed)
    z = F.normalize(torch.randn(4, 16, 5, generator=g, dtype=torch.float64), dim=-1)
    y = torch.randint(0, 4, (4, 16), generator=g)
    for beta in (0.0, 1.0, 3.0):
        assert torch.all(schane_loss(z, y, beta=beta) <= schane_perpos_loss(z, y, beta=beta) + 1e-12)


def test_schane_batched_equals_per_episode():
    eps = [make_batch(s, 12, c) for s, c in [(0, 2), (1, 3), (2, 4), (3, 6)]]
    z = torch.stack([e[0] for e in eps])
    y = torch.stack([e[1] for e in eps])
    for kw in ({"tau": 0.1, "beta": 1.0}, {"tau": 0.05, "beta": 0.0},
               {"tau": 0.2, "beta": 2.0, "detach_weights": True}):
        out, gb = grad_of(lambda v: schane_loss(v, y, **kw).sum(), z)
        per = schane_loss(z, y, **kw)
        assert per.shape == (4,)
        for e in range(4):
            one, ge = grad_of(lambda v: schane_loss(v, y[e], **kw), z[e])
            assert torch.allclose(per[e], one, rtol=1e-12, atol=0)
            assert torch.allclose(gb[e], ge, rtol=1e-10, atol=1e-12)


def test_schane_valid_mask_equals_removing_the_samples():
    g = torch.Generator().manual_seed(3)
    e, b, d = 3, 14, 6
    z = F.normalize(torch.randn(e, b, d, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, 3, (e, b), generator=g)
    valid = torch.rand(e, b, generator=g) > 0.3
    out, grad = grad_of(lambda v: schane_loss(v, labels, tau=0.2, valid=valid).sum(), z)
    per = schane_loss(z, labels, tau=0.2, valid=valid)
    for i in range(e):
        keep = valid[i]
        want, g_want = grad_of(lambda v: schane_loss(v, labels[i, keep], tau=0.2), z[i, keep])
        torch.testing.assert_close(per[i], want, rtol=1e-12, atol=0)
        torch.testing.assert_close(grad[i, keep], g_want, rtol=1e-10, atol=1e-12)
    assert torch.all(grad[~valid] == 0) and grad[valid].abs().sum() > 0
    # a 2-D call takes a [B] mask
    torch.testing.assert_close(schane_loss(z[0], labels[0], tau=0.2, valid=valid[0]), per[0])


def test_schane_autocast_bf16_float32_inside():
    z64, y = five_way_five_shot(4, dim=64)
    ref = schane_loss(z64, y, tau=0.05, beta=2.0)
    z_low = z64.float().to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = schane_loss(z_low, y, tau=0.05, beta=2.0)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.isfinite(z_low.grad).all()
    # float32 inside: the float64 value on the same rounded input, to float32 accuracy ...
    assert rel_err(out, schane_loss(z_low.detach().double(), y, tau=0.05, beta=2.0)) < 1e-5
    # ... and close to the full-precision loss (only the bf16 rounding of z differs)
    assert rel_err(out, ref) < 2e-2


def test_schane_well_separated_clusters_float32():
    # tight clusters at tau 0.05: pos_i / (pos_i + Ng_i) is 1 - 1e-6-ish, resolved in log space
    z, y = separated_clusters()
    for beta in (1.0, 6.0):
        ref = float(schane_loss(z, y, tau=0.05, beta=beta))
        assert 1e-7 < ref < 1e-4
        z32 = z.float().requires_grad_(True)
        loss = schane_loss(z32, y, tau=0.05, beta=beta)
        (grad,) = torch.autograd.grad(loss, z32)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert rel_err(loss, schane_loss(z32.detach().double(), y, tau=0.05, beta=beta)) < 1e-4


def test_schane_anchors_without_positive_left_out():
    z, _ = make_batch(3, 7, 1, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3])  # anchors 5 and 6 have no positive
    got = float(schane_loss(z, y, tau=0.1))
    ref = float(authors_loop(z, y, 0.1, 1.0))
    assert rel_err(got, ref) < 1e-9
    assert abs(got - ref * 5 / 7) > 1e-3  # not counted as zero
    # the singletons still act as negatives
    assert abs(got - float(schane_loss(z[:5], y[:5], tau=0.1))) > 1e-3


def test_schane_no_positive_zero_grad_and_single_class():
    z, _ = make_batch(0, 5, 5, dtype=torch.float32)
    z.requires_grad_(True)
    loss = schane_loss(z, torch.arange(5))  # 1-shot, one view: nobody has a positive
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    zb = torch.stack([z.detach(), z.detach()]).requires_grad_(True)
    lb = schane_loss(zb, torch.arange(5).expand(2, -1))
    lb.sum().backward()
    assert torch.equal(lb, torch.zeros(2)) and torch.equal(zb.grad, torch.zeros_like(zb))
    # single class: no negatives, exactly 0, warned or raised like schane_perpos_loss
    zs = z.detach().clone().requires_grad_(True)
    y0 = torch.zeros(5, dtype=torch.long)
    with pytest.warns(UserWarning, match="schane_loss.*single class"):
        loss = schane_loss(zs, y0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(zs.grad, torch.zeros_like(zs))
    with pytest.raises(ValueError, match="single class"):
        schane_loss(zs.detach(), y0, single_class="error")
    with pytest.raises(ValueError, match="single_class"):
        schane_loss(zs.detach(), torch.tensor([0, 0, 1, 1, 2]), single_class="nan")


def test_schane_gradcheck_and_module():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    yb = torch.tensor([[0, 0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 1, 1, 2]])
    assert torch.autograd.gradcheck(
        lambda v: schane_loss(F.normalize(v, dim=-1), yb, tau=0.3, beta=1.5), (x,))
    z, y = make_batch(4, 12, 3)
    m = SCHaNeLoss(tau=0.2, beta=2.0, detach_weights=True)
    assert torch.equal(m(z, y), schane_loss(z, y, tau=0.2, beta=2.0, detach_weights=True))
    assert "beta=2.0" in repr(m)
    with pytest.raises(ValueError):
        SCHaNeLoss(single_class="ignore")
    with pytest.raises(ValueError, match="tau"):
        schane_loss(z, y, tau=0.0)
