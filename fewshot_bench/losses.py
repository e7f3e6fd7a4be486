"""Contrastive losses for few-shot fine-tuning: SCHaNe, SupCon, hard-negative (HCL), CE mix.

SCHaNe: Long et al., "When hard negative sampling meets supervised contrastive learning",
arXiv 2308.14893 (2023); successor CLCE, arXiv 2402.14551. ``schane_loss`` is the form in
the authors' public code (GitHub GLA-IR/SCHaNe, ``CL_tools/losses.py``, function ``SCHaNe``,
estimator "hard"). ``schane_perpos_loss`` is this harness's earlier reconstruction from the
paper's text and the two public losses it builds on: SupCon (Khosla et al., NeurIPS 2020,
the L_out form) and the hard-negative loss of Robinson et al. (ICLR 2021). Both are kept
(methods ``schane`` and ``schane-perpos``); they are different losses.

For L2-normalised embeddings z (rows, all views stacked) with labels y and s_ij = z_i . z_j / tau:

    P(i) = {p != i : y_p == y_i}                     positives, chosen by label
    N(i) = {k : y_k != y_i}                          negatives
    w_ik = |N(i)| * softmax_{k in N(i)}(beta * s_ik)  hard-negative weights, mean 1 over N(i)
    Ng_i = sum_{k in N(i)} w_ik e^{s_ik}

    schane_loss (GLA-IR/SCHaNe: the positives' mean inside the log):
      pos_i = 1/|P(i)| sum_{p in P(i)} e^{s_ip},   l_i = -log( pos_i / (pos_i + Ng_i) )
    schane_perpos_loss (reconstruction: one log term per positive):
      l_i = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / (e^{s_ip} + Ng_i) )

    L    = mean of l_i over the anchors with |P(i)| >= 1

The two coincide exactly when every anchor has exactly one positive (1-shot with 2 views);
with several positives the authors' loss is never larger (Jensen, twice), e.g. 6.19 against
9.97 at 5-way 5-shot, 2 views, tau 0.1 on random 8-dim unit vectors; the gap grows with the
spread of s_ip over P(i). beta = 0 gives the authors' estimator "easy" (Ng_i = sum e^{s_ik}).

The fine-tuning objective is ``(1 - lam) * CE + lam * L`` (``combined_loss``).

Conventions shared by every loss here:

- ``z`` is [B, D] with labels [B] (returns a 0-dim tensor), or [E, B, D] with labels [E, B]
  (E episodes at once; returns [E], each entry equal to the 2-D call on that episode).
  ``z`` is expected to be L2-normalised already; it is not normalised here.
- Computed in float32 (float64 if z is float64) with autocast switched off, whatever the
  input dtype or the surrounding fp16/bf16 autocast; every exponential goes through a
  log-sum-exp with the row max subtracted, so tau = 0.05 and identical embeddings are fine.
- Anchors without a positive are left out of the mean (not counted as 0). If no anchor has
  a positive (1-shot with a single view per image), the loss is 0, still attached to the
  graph with a zero gradient. The fine-tuning code must feed >= 2 views per image.
- A single-class batch has no negatives: the SCHaNe denominator is then just e^{s_ip}, so
  every l_i is exactly 0. ``single_class="zero"`` returns that 0 (graph-connected) with a
  ``UserWarning``; ``single_class="error"`` raises ``ValueError`` instead.
- ``detach_weights=False`` (default) lets gradient flow through the weights w_ik, as in
  Robinson et al.'s reference code; ``True`` treats them as constants. The loss value is
  the same either way, only the gradient differs.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "schane_loss",
    "schane_perpos_loss",
    "supcon_loss",
    "hcl_loss",
    "combined_loss",
    "reference_schane_perpos_loss",
    "SCHaNeLoss",
    "SCHaNePerPosLoss",
    "SupConLoss",
    "HCLLoss",
]

_SINGLE_CLASS_MODES = ("zero", "error")
CONTRASTIVE_TERMS = ("schane", "schane-perpos", "supcon", "hcl")  # combined_loss(contrastive=)


# --------------------------------------------------------------------------- helpers


def _no_autocast(device: torch.device):
    """Context that switches autocast off for ``device`` (no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # pragma: no cover - exotic device types
        return contextlib.nullcontext()


def _prepare(z: Tensor, labels: Tensor, tau: float, what: str = "labels") -> tuple[Tensor, Tensor, bool]:
    """Validate shapes, lift 2-D input to one episode, cast to the compute dtype."""
    if not isinstance(z, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("z and labels must be torch tensors")
    if z.dim() not in (2, 3):
        raise ValueError(f"z must be [B, D] or [E, B, D], got shape {tuple(z.shape)}")
    if tuple(labels.shape) != tuple(z.shape[:-1]):
        raise ValueError(
            f"{what} must have shape {tuple(z.shape[:-1])} to match z {tuple(z.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"{what} must be an integer tensor, got {labels.dtype}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    single = z.dim() == 2
    if single:
        z, labels = z.unsqueeze(0), labels.unsqueeze(0)
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    return z.to(dtype), labels.to(z.device), single


def _masked_logsumexp(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """log sum_{j: mask} exp(x_j) over the last dim, and whether any entry was in the mask.

    Rows with an empty mask give 0 (callers must discard them with the second output).
    No inf/NaN is produced anywhere, in values or gradients, so discarded rows stay harmless.
    """
    m = x.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.where(mask, torch.exp(torch.where(mask, x, m) - m), torch.zeros_like(x))
    any_ = mask.any(dim=-1)
    total = e.sum(dim=-1)
    out = torch.log(torch.where(any_, total, torch.ones_like(total))) + m.squeeze(-1)
    return out, any_


def _masks(labels: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Positive mask (same label, not self) and negative mask (different label), [E, B, B].
    `valid` [E, B]: samples outside it are neither anchors nor candidates."""
    same = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    eye = torch.eye(labels.shape[-1], dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    if valid is not None:
        pair = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        pos, neg = pos & pair, neg & pair
    return pos, neg


def _prepare_valid(valid: Tensor | None, labels: Tensor, single: bool) -> Tensor | None:
    """Check and lift the optional sample mask like the labels."""
    if valid is None:
        return None
    if valid.dtype != torch.bool or tuple(valid.shape) != tuple(labels.shape[1:] if single else labels.shape):
        raise ValueError(f"valid must be a bool tensor shaped like the labels, got "
                         f"{valid.dtype} {tuple(valid.shape)}")
    return (valid.unsqueeze(0) if single else valid).to(labels.device)


def _mean_over_anchors(per_pair: Tensor, pos: Tensor) -> Tensor:
    """per_pair [E, B, B] -> per-episode mean over anchors (with >= 1 positive) of the
    mean over that anchor's positives. Episodes without any positive give 0 (graph-connected)."""
    n_pos = pos.sum(dim=-1)  # [E, B]
    has_pos = n_pos > 0
    per_anchor = torch.where(pos, per_pair, torch.zeros_like(per_pair)).sum(dim=-1)
    per_anchor = per_anchor / n_pos.clamp_min(1).to(per_pair.dtype)
    return _mean_of_anchor_terms(per_anchor, has_pos)


def _mean_of_anchor_terms(per_anchor: Tensor, has_pos: Tensor) -> Tensor:
    """per_anchor [E, B] -> per-episode mean over the anchors in `has_pos` [E, B]; the other
    entries (whatever they hold) are dropped. Episodes without such an anchor give 0."""
    per_anchor = torch.where(has_pos, per_anchor, torch.zeros_like(per_anchor))
    n_anchors = has_pos.sum(dim=-1).clamp_min(1).to(per_anchor.dtype)
    return per_anchor.sum(dim=-1) / n_anchors


def _check_single_class(pos: Tensor, neg: Tensor, single_class: str, name: str) -> None:
    """Warn or raise when some episode has positive pairs but no negatives at all."""
    if single_class not in _SINGLE_CLASS_MODES:
        raise ValueError(f"single_class must be one of {_SINGLE_CLASS_MODES}, got {single_class!r}")
    bad = pos.flatten(1).any(dim=1) & ~neg.flatten(1).any(dim=1)  # [E]; one sync below
    if not bool(bad.any()):
        return
    which = bad.nonzero().flatten().tolist()
    msg = (
        f"{name}: episode(s) {which} contain a single class, so there are no negatives and the "
        "contrastive term is exactly 0 for them"
    )
    if single_class == "error":
        raise ValueError(msg + "; sample at least two classes per batch")
    warnings.warn(msg + " (returned 0; pass single_class='error' to raise instead)", stacklevel=3)


def _log_weighted_negatives(
    s: Tensor, neg: Tensor, beta: float, detach_weights: bool,
) -> tuple[Tensor, Tensor]:
    """log Ng_i = log sum_{k in N(i)} w_ik e^{s_ik}, w_ik = |N(i)| softmax_{k in N(i)}(beta s_ik).

    s [E, B, B] scaled similarities, neg [E, B, B] negative mask -> log Ng [E, B] and whether
    the anchor has any negative (rows without one give 0; callers must discard them).
    Shared by the reconstruction and the authors' form: the weights are the same in both.
    """
    # log w_ik = log|N(i)| + log softmax_{k in N(i)}(beta * s_ik)
    n_neg = neg.sum(dim=-1, keepdim=True).clamp_min(1).to(s.dtype)
    lse_beta, _ = _masked_logsumexp(beta * s, neg)
    log_w = torch.log(n_neg) + beta * s - lse_beta.unsqueeze(-1)
    if detach_weights:
        log_w = log_w.detach()
    # log sum_{k in N(i)} w_ik e^{s_ik}, as a log-sum-exp of (log w_ik + s_ik)
    return _masked_logsumexp(log_w + s, neg)


def _perpos_kernel(
    z: Tensor, labels: Tensor, tau: float, beta: float, detach_weights: bool,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The per-positive reconstruction on [E, B, D] -> per-episode loss [E], pos, neg."""
    pos, neg = _masks(labels, valid)
    s = torch.matmul(z, z.transpose(-1, -2)) / tau  # [E, B, B]
    log_neg, has_neg = _log_weighted_negatives(s, neg, beta, detach_weights)  # [E, B]
    # -log(e^{s_ip} / (e^{s_ip} + e^{log_neg_i})) = log(1 + e^{log_neg_i - s_ip})
    per_pair = torch.logaddexp(log_neg.unsqueeze(-1) - s, torch.zeros_like(s))
    # no negatives: the denominator is e^{s_ip} alone, the term is exactly 0
    per_pair = torch.where(has_neg.unsqueeze(-1), per_pair, torch.zeros_like(per_pair))
    return _mean_over_anchors(per_pair, pos), pos, neg


def _schane_kernel(
    z: Tensor, labels: Tensor, tau: float, beta: float, detach_weights: bool,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' SCHaNe (GLA-IR/SCHaNe) on [E, B, D] -> per-episode loss [E], pos, neg."""
    pos, neg = _masks(labels, valid)
    s = torch.matmul(z, z.transpose(-1, -2)) / tau  # [E, B, B]
    log_neg, has_neg = _log_weighted_negatives(s, neg, beta, detach_weights)  # [E, B]
    # log pos_i = log( 1/|P(i)| sum_{p in P(i)} e^{s_ip} )
    lse_pos, has_pos = _masked_logsumexp(s, pos)
    n_pos = pos.sum(dim=-1).clamp_min(1).to(s.dtype)
    log_pos = lse_pos - torch.log(n_pos)
    # -log(pos_i / (pos_i + Ng_i)) = log(1 + e^{log Ng_i - log pos_i})
    per_anchor = torch.logaddexp(log_neg - log_pos, torch.zeros_like(log_pos))
    # no negatives: the ratio is pos_i / pos_i, the term is exactly 0
    per_anchor = torch.where(has_neg, per_anchor, torch.zeros_like(per_anchor))
    return _mean_of_anchor_terms(per_anchor, has_pos), pos, neg


# --------------------------------------------------------------------------- losses


def _hard_negative_loss(kernel, name: str, z: Tensor, labels: Tensor, tau: float, beta: float,
                        detach_weights: bool, single_class: str, valid: Tensor | None,
                        what: str = "labels") -> Tensor:
    """The frame every hard-negative loss shares: check and lift the inputs, run `kernel`
    (`_schane_kernel` or `_perpos_kernel`) without autocast, handle single-class batches."""
    zc, lab, single = _prepare(z, labels, tau, what=what)
    valid = _prepare_valid(valid, lab, single)
    with _no_autocast(zc.device):
        loss, pos, neg = kernel(zc, lab, float(tau), float(beta), detach_weights, valid)
    _check_single_class(pos, neg, single_class, name)
    return loss[0] if single else loss


def schane_loss(
    z: Tensor,
    labels: Tensor,
    *,
    tau: float = 0.1,
    beta: float = 1.0,
    detach_weights: bool = False,
    single_class: str = "zero",
    valid: Tensor | None = None,
) -> Tensor:
    """SCHaNe as in the authors' public code (GLA-IR/SCHaNe, ``SCHaNe``, estimator "hard").

    l_i = -log(pos_i / (pos_i + Ng_i)) with pos_i the *mean* of e^{s_ip} over the positives
    (inside the log) and Ng_i the hard-negative sum; see the module docstring. Computed in
    log space: log pos_i is a log-sum-exp over the positives minus log|P(i)|,
    l_i = softplus(log Ng_i - log pos_i).

    Args:
        z: L2-normalised embeddings, [B, D] or [E, B, D] (E episodes at once).
        labels: integer labels, [B] or [E, B]. Positives are chosen by label.
        tau: temperature (> 0).
        beta: hardness; 0 gives uniform weights (the authors' estimator "easy"), larger
            values focus on similar negatives.
        detach_weights: if True no gradient flows through the hard-negative weights.
            Default False: gradient flows, as in the authors' code.
        single_class: "zero" (0 with a UserWarning) or "error" (ValueError) when a batch
            with positive pairs has only one class and therefore no negatives.
        valid: optional bool mask shaped like `labels`; samples outside it take no part
            (neither anchor, positive nor negative), exactly as if they were removed:
            padding of imbalanced episodes.

    Returns:
        0-dim tensor for 2-D input, [E] for 3-D input; float32 (float64 for float64 z).

    Deliberate, documented deviations from the authors' code, all in edge cases:

    - anchors without a positive are left out of the mean (the authors' code divides 0 by 0
      there, so one such anchor makes the whole batch loss NaN); no positive anywhere gives
      0 with a zero gradient;
    - a batch without negatives (single class) gives 0, handled as `single_class` says (the
      authors' code takes the mean of an empty weight vector there, NaN);
    - everything is in log space with per-row maxima over the masked entries, where the
      authors exponentiate after subtracting the row max over all entries (self included),
      which can underflow at small tau.
    """
    return _hard_negative_loss(_schane_kernel, "schane_loss", z, labels, tau, beta,
                               detach_weights, single_class, valid)


def schane_perpos_loss(
    z: Tensor,
    labels: Tensor,
    *,
    tau: float = 0.1,
    beta: float = 1.0,
    detach_weights: bool = False,
    single_class: str = "zero",
    valid: Tensor | None = None,
) -> Tensor:
    """SCHaNe, reconstructed: one log term per positive (the method ``schane-perpos``).

    l_i = -1/|P(i)| sum_p log(e^{s_ip} / (e^{s_ip} + Ng_i)). Equal to ``schane_loss`` when
    every anchor has exactly one positive (1-shot, 2 views), otherwise never smaller. Same
    arguments, shapes, dtype handling and edge cases as ``schane_loss``.
    """
    return _hard_negative_loss(_perpos_kernel, "schane_perpos_loss", z, labels, tau, beta,
                               detach_weights, single_class, valid)


def hcl_loss(
    z: Tensor,
    instance_ids: Tensor,
    *,
    tau: float = 0.1,
    beta: float = 1.0,
    detach_weights: bool = False,
    single_class: str = "zero",
    valid: Tensor | None = None,
) -> Tensor:
    """Hard-negative contrastive loss without labels (Robinson et al., ICLR 2021; tau+ = 0).

    The SCHaNe ablation "hard negatives without labels": positives are only the other views
    of the same image, every other sample is a (reweighted) negative, even one of the same
    class. This is exactly ``schane_loss`` with instance ids in place of labels, which is
    how it is computed (with 2 views each anchor has one positive, so it is also Robinson
    et al.'s per-positive form). Same shapes, dtype handling and edge cases as ``schane_loss``.
    """
    return _hard_negative_loss(_schane_kernel, "hcl_loss", z, instance_ids, tau, beta,
                               detach_weights, single_class, valid, what="instance_ids")


def supcon_loss(z: Tensor, labels: Tensor, *, tau: float = 0.1,
                valid: Tensor | None = None) -> Tensor:
    """Supervised contrastive loss, L_out form (Khosla et al., NeurIPS 2020).

    l_i = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip} / sum_{a != i} e^{s_ia} ), averaged over
    anchors with a positive; the denominator runs over all non-self samples (positives and
    negatives), no reweighting. A single-class batch is well defined here (the denominator
    still has the other positives), so no special case. Shapes and dtype as ``schane_loss``.
    """
    zc, lab, single = _prepare(z, labels, tau)
    valid = _prepare_valid(valid, lab, single)
    with _no_autocast(zc.device):
        pos, _ = _masks(lab, valid)
        s = torch.matmul(zc, zc.transpose(-1, -2)) / float(tau)
        eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
        others = ~eye.expand_as(s)
        if valid is not None:
            others = others & valid.unsqueeze(-2)
        log_den, _ = _masked_logsumexp(s, others)  # [E, B]
        per_pair = log_den.unsqueeze(-1) - s
        loss = _mean_over_anchors(per_pair, pos)
    return loss[0] if single else loss


def combined_loss(
    logits: Tensor,
    z: Tensor,
    labels: Tensor,
    *,
    lam: float = 0.9,
    tau: float = 0.1,
    beta: float = 1.0,
    detach_weights: bool = False,
    single_class: str = "zero",
    contrastive: str = "schane",
    instance_ids: Tensor | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """``(1 - lam) * cross_entropy(logits, labels) + lam * contrastive(z, labels)``.

    `contrastive` picks the second term (``CONTRASTIVE_TERMS``): "schane" (default, the
    authors' form), "schane-perpos" (the per-positive reconstruction), "supcon" (SupCon
    L_out, no hard-negative weights; tau only) or "hcl" (hard negatives without labels:
    positives are the other views of the same image, so it needs `instance_ids` [B] / [E, B]).

    lam = 0.9 is the paper's few-shot recommendation. lam = 0 returns exactly
    ``F.cross_entropy`` (z is not touched), lam = 1 returns exactly the contrastive term.
    logits [B, C] with z [B, D] and labels [B] give a 0-dim tensor; logits [E, B, C] with
    z [E, B, D] and labels [E, B] give [E] (per-episode mean CE, per-episode SCHaNe).
    `valid` (bool, shaped like labels) leaves the other samples out of both terms.
    """
    if not (0.0 <= lam <= 1.0):
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    if logits.dim() not in (2, 3) or tuple(logits.shape[:-1]) != tuple(labels.shape):
        raise ValueError(
            f"logits must be [B, C] or [E, B, C] matching labels {tuple(labels.shape)}, "
            f"got {tuple(logits.shape)}"
        )
    if lam < 1.0:
        if valid is not None:  # mean over the valid samples only
            per = F.cross_entropy(logits.transpose(-1, -2) if logits.dim() == 3 else logits,
                                  labels, reduction="none")
            w = valid.to(per.dtype)
            ce = (per * w).sum(dim=-1) / w.sum(dim=-1).clamp_min(1)
        elif logits.dim() == 2:
            ce = F.cross_entropy(logits, labels)
        else:  # [E, B, C] -> cross_entropy wants the class dim second: [E, C, B]
            ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=-1)
        if lam == 0.0:
            return ce
    if contrastive in ("schane", "schane-perpos"):
        fn = schane_loss if contrastive == "schane" else schane_perpos_loss
        con = fn(z, labels, tau=tau, beta=beta, detach_weights=detach_weights,
                 single_class=single_class, valid=valid)
    elif contrastive == "supcon":
        con = supcon_loss(z, labels, tau=tau, valid=valid)
    elif contrastive == "hcl":
        if instance_ids is None:
            raise ValueError("contrastive='hcl' needs instance_ids (which rows are views of one image)")
        con = hcl_loss(z, instance_ids, tau=tau, beta=beta, detach_weights=detach_weights,
                       single_class=single_class, valid=valid)
    else:
        raise ValueError(f"unknown contrastive term {contrastive!r}: "
                         f"{', '.join(CONTRASTIVE_TERMS)}")
    if lam == 1.0:
        return con
    return (1.0 - lam) * ce + lam * con


# --------------------------------------------------------------------------- oracle


def reference_schane_perpos_loss(z: Tensor, labels: Tensor, tau: float = 0.1, beta: float = 1.0) -> float:
    """Test oracle: the per-positive reconstruction as a plain float64 loop, one [B, D] batch.

    Literal on purpose (no log-sum-exp): fine for tau >= ~0.01 with unit-norm z.
    Returns 0.0 when no anchor has a positive; a single-class batch also gives 0.0.
    """
    zz = z.detach().to(torch.float64).cpu().tolist()
    yy = [int(v) for v in labels.detach().cpu().tolist()]
    n = len(yy)

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(zz[i], zz[j])) / tau

    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and yy[p] == yy[i]]
        negatives = [k for k in range(n) if yy[k] != yy[i]]
        if not positives:
            continue
        soft = [math.exp(beta * sim(i, k)) for k in negatives]
        total = sum(soft)
        weights = [len(negatives) * v / total for v in soft]
        neg_sum = sum(w * math.exp(sim(i, k)) for w, k in zip(weights, negatives))
        terms = []
        for p in positives:
            e_p = math.exp(sim(i, p))
            terms.append(-math.log(e_p / (e_p + neg_sum)))
        per_anchor.append(sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


# --------------------------------------------------------------------------- modules


class SCHaNeLoss(nn.Module):
    """``schane_loss`` with its hyperparameters fixed at construction; forward(z, labels)."""

    def __init__(
        self,
        tau: float = 0.1,
        beta: float = 1.0,
        detach_weights: bool = False,
        single_class: str = "zero",
    ) -> None:
        super().__init__()
        if single_class not in _SINGLE_CLASS_MODES:
            raise ValueError(f"single_class must be one of {_SINGLE_CLASS_MODES}, got {single_class!r}")
        self.tau, self.beta = tau, beta
        self.detach_weights, self.single_class = detach_weights, single_class

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return schane_loss(
            z, labels, tau=self.tau, beta=self.beta,
            detach_weights=self.detach_weights, single_class=self.single_class,
        )

    def extra_repr(self) -> str:
        return f"tau={self.tau}, beta={self.beta}, detach_weights={self.detach_weights}"


class SCHaNePerPosLoss(SCHaNeLoss):
    """``schane_perpos_loss`` with its hyperparameters fixed at construction; forward(z, labels)."""

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return schane_perpos_loss(
            z, labels, tau=self.tau, beta=self.beta,
            detach_weights=self.detach_weights, single_class=self.single_class,
        )


class SupConLoss(nn.Module):
    """``supcon_loss`` with a fixed temperature; forward(z, labels)."""

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        self.tau = tau

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return supcon_loss(z, labels, tau=self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


class HCLLoss(nn.Module):
    """``hcl_loss`` with fixed hyperparameters; forward(z, instance_ids)."""

    def __init__(self, tau: float = 0.1, beta: float = 1.0, detach_weights: bool = False) -> None:
        super().__init__()
        self.tau, self.beta, self.detach_weights = tau, beta, detach_weights

    def forward(self, z: Tensor, instance_ids: Tensor) -> Tensor:
        return hcl_loss(z, instance_ids, tau=self.tau, beta=self.beta, detach_weights=self.detach_weights)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, beta={self.beta}, detach_weights={self.detach_weights}"
