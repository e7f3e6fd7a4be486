"""The straightforward per-episode fine-tuning loop, as a test oracle for the engine.

This is the loop researchers write (learn2learn's and P>M>F's fine-tuning examples): for
each episode, deep-copy the pretrained backbone, freeze everything but the parameters the
tune mode trains, put a cosine head initialised from the support prototypes on top, and for
every step run the *whole* network (frozen lower layers included) on the support images'
augmented views, then classify the clean query views. One episode at a time, no feature
bank, no vmap, no hand-written autograd.

It follows `EpisodeFinetuner`'s protocol exactly (same augmented views, same per-step view
choice from `view_schedule`, same loss, head initialisation, optimizer, and loss_before /
loss_after measured on the step-0 batch), so per-episode accuracies of the two agree up
to float rounding. That agreement is the test of the engine (tests/test_finetune.py), and
`benchmarks/speed.py` times the two against each other.

The trainable parameters are the model's own ones that `split.py` names as the sources
of its upper part (`BackboneSplit.sources`); the loop trains them in the unmodified model,
while the engine trains `split.py`'s rebuilt upper part, so a wrong cut still shows up as a
disagreement. Which parameters each family trains is pinned separately, by a hand-written
list per family in tests/test_split_families.py.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .finetune import FinetuneConfig, _make_optimizer, view_schedule
from .losses import combined_loss
from .runtime import as_compute_float
from .split import split_backbone

__all__ = ["trainable_parameters", "reference_finetune_episode",
           "reference_protonet_episode", "reference_linear_probe_episode"]


def trainable_parameters(model: nn.Module, tune: str) -> list[nn.Parameter]:
    """The parameters of `model` itself that `tune` fine-tunes (the head aside).

    head: none; norm: scale and shift of the final normalisation layer; last: the last
    stage and everything after it; full: all (per family: docs/tune-modes.md). They are
    `split_backbone`'s `sources`, so unsupported (model, mode) pairs raise its `BenchError`.
    """
    return split_backbone(model, tune).sources  # the engine's rule, one place


def _embed(net: nn.Module, x: Tensor, batch: int = 256) -> Tensor:
    return as_compute_float(torch.cat([net(x[i:i + batch]) for i in range(0, len(x), batch)]))


@torch.no_grad()
def _prototypes(net: nn.Module, images_views: Tensor, support_rows: Tensor, labels: Tensor,
                ways: int) -> Tensor:
    z = F.normalize(_embed(net, images_views[support_rows, 0]), dim=-1)
    labels = labels.to(z.device)
    return F.normalize(torch.stack([z[labels == c].mean(0) for c in range(ways)]), dim=-1)


def _real_support(support_rows, ways: int, shots: int,
                  support_mask: np.ndarray | Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(slots, rows, labels) of the real support images: an imbalanced episode's padding
    slots are simply dropped here, which is what the engine's masks must reproduce."""
    rows = torch.as_tensor(np.asarray(support_rows), dtype=torch.long)
    labels = torch.arange(ways).repeat_interleave(shots)
    slots = (torch.arange(len(rows)) if support_mask is None
             else torch.as_tensor(np.asarray(support_mask)).nonzero().flatten())
    return slots, rows[slots], labels[slots]


def reference_protonet_episode(model: nn.Module, images_views: Tensor, support_rows,
                               query_rows, ways: int, shots: int,
                               device: torch.device | str = "cpu",
                               support_mask: np.ndarray | Tensor | None = None) -> float:
    """Cosine nearest-class-mean accuracy of the pretrained embeddings (clean views)."""
    net = model.eval().to(device)
    _, support_rows, labels = _real_support(support_rows, ways, shots, support_mask)
    query_rows = torch.as_tensor(np.asarray(query_rows), device="cpu")
    x = images_views.to(device) if images_views.device != torch.device(device) else images_views
    protos = _prototypes(net, x, support_rows, labels, ways)
    with torch.no_grad():
        zq = F.normalize(_embed(net, x[query_rows, 0]), dim=-1)
    pred = (zq @ protos.T).argmax(-1).cpu()
    labels = torch.arange(ways).repeat_interleave(len(query_rows) // ways)
    return int((pred == labels).sum()) / len(labels)


def reference_finetune_episode(
    model: nn.Module,
    tune: str,
    images_views: Tensor,
    support_rows,
    query_rows,
    episode: int,
    seed: int,
    cfg: FinetuneConfig,
    ways: int,
    shots: int,
    device: torch.device | str = "cpu",
    support_mask: np.ndarray | Tensor | None = None,
) -> dict:
    """Fine-tune a fresh copy of `model` on one episode; return accuracy and losses.

    `images_views` float [M, A, 3, S, S]: normalised inputs, view 0 clean (see
    `bank.normalised_views`); `support_rows` [N*K] (class-major) and `query_rows` [N*Q]
    (class-major) index its first dimension; `support_mask` [N*K] marks the real support
    images of an imbalanced episode (the others are dropped). Returns ``dict(accuracy,
    loss_before, loss_after, failed)``; a non-finite loss gives ``failed=True`` and
    accuracy NaN.
    """
    device = torch.device(device)
    net = copy.deepcopy(model).to(device).eval()  # eval: BatchNorm statistics stay frozen
    for p in net.parameters():
        p.requires_grad_(False)
    params = trainable_parameters(net, tune)
    for p in params:
        p.requires_grad_(True)

    x_all = images_views if images_views.device == device else images_views.to(device)
    nk, a = len(support_rows), x_all.shape[1]
    slots, support_rows, image_labels = _real_support(support_rows, ways, shots, support_mask)
    query_rows = torch.as_tensor(np.asarray(query_rows), dtype=torch.long)

    head = _prototypes(net, x_all, support_rows, image_labels, ways).clone().requires_grad_()
    opt = _make_optimizer(params, cfg, head=[head])
    # the schedule is drawn for all N*K slots; the real images keep their slots' views
    schedule = torch.from_numpy(view_schedule(seed, episode, cfg.steps, nk, cfg.views, a))[:, slots]
    labels = image_labels.to(device).repeat_interleave(cfg.views)
    instances = torch.arange(len(slots), device=device).repeat_interleave(cfg.views)

    def step_loss(step: int) -> Tensor:
        x = x_all[support_rows[:, None], schedule[step]].flatten(0, 1)  # (image, view) order
        z = F.normalize(as_compute_float(net(x)), dim=-1)
        logits = cfg.logit_scale * z @ F.normalize(head, dim=-1).T
        return combined_loss(logits, z, labels, lam=cfg.lam, tau=cfg.tau, beta=cfg.beta,
                             detach_weights=cfg.detach_weights, contrastive=cfg.contrastive,
                             instance_ids=instances)

    failed = False
    with torch.no_grad():
        loss_before = float(step_loss(0))
    for step in range(cfg.steps):
        loss = step_loss(step)
        if not torch.isfinite(loss):
            failed = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss_after = float(step_loss(0))
        zq = F.normalize(_embed(net, x_all[query_rows, 0]), dim=-1)
        pred = (zq @ F.normalize(head, dim=-1).T).argmax(-1).cpu()
    failed = failed or not np.isfinite(loss_after)
    q_labels = torch.arange(ways).repeat_interleave(len(query_rows) // ways)
    acc = float("nan") if failed else int((pred == q_labels).sum()) / len(q_labels)
    return dict(accuracy=acc, loss_before=loss_before, loss_after=loss_after, failed=failed)


def reference_linear_probe_episode(model: nn.Module, images_views: Tensor, support_rows,
                                   query_rows, episode: int, seed: int, cfg: FinetuneConfig,
                                   ways: int, shots: int, device: torch.device | str = "cpu",
                                   support_mask: np.ndarray | Tensor | None = None) -> dict:
    """A zero-initialised `nn.Linear` (no bias) trained with CE on the frozen network's embeddings of
    the same augmented support views (same `view_schedule`), then scored on the clean
    queries: the textbook linear probe, one episode at a time."""
    net = model.eval().to(device)
    x_all = images_views.to(device)
    nk, a = len(support_rows), x_all.shape[1]
    slots, support_rows, image_labels = _real_support(support_rows, ways, shots, support_mask)
    query_rows = torch.as_tensor(np.asarray(query_rows), dtype=torch.long)
    schedule = torch.from_numpy(view_schedule(seed, episode, cfg.steps, nk, cfg.views, a))[:, slots]
    labels = image_labels.to(device).repeat_interleave(cfg.views)
    with torch.no_grad():
        zq = F.normalize(_embed(net, x_all[query_rows, 0]), dim=-1)
        dim = zq.shape[-1]
    head = nn.Linear(dim, ways, bias=False).to(device)
    nn.init.zeros_(head.weight)
    opt = _make_optimizer(list(head.parameters()), cfg)

    def step_loss(step: int) -> Tensor:
        with torch.no_grad():
            x = x_all[support_rows[:, None], schedule[step]].flatten(0, 1)  # (image, view)
            z = F.normalize(as_compute_float(net(x)), dim=-1)
        return F.cross_entropy(head(z), labels)

    with torch.no_grad():
        loss_before = float(step_loss(0))
    for step in range(cfg.steps):
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss_after = float(step_loss(0))
        pred = head(zq).argmax(-1).cpu()
    q_labels = torch.arange(ways).repeat_interleave(len(query_rows) // ways)
    acc = int((pred == q_labels).sum()) / len(q_labels)
    return dict(accuracy=acc, loss_before=loss_before, loss_after=loss_after, failed=False)
