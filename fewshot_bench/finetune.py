"""Per-episode fine-tuning, many episodes at once.

Protocol for each episode and method: start from the pretrained weights, put an N-way
cosine head on the encoder initialised from the support prototypes (as P>M>F and
Baseline++ do, so step 0 already equals ProtoNet), fine-tune the trainable part (`--tune`)
on the support set only, with `views` augmented views of each support image per step,
classify the queries (clean views), reset.

Why it is fast: the frozen part of the backbone ran once into the feature bank
(`bank.py`), and episodes are trained together: each trainable tensor gets a leading
episode dimension and one call runs the upper network for all of them: a convolutional
stage with the episodes folded into its channels (`folded.py`: 1x1 convolutions as batched
matrix products), anything else under `torch.func.vmap(functional_call(...))`. Episodes
never interact: each has its own parameters, its loss is summed (not averaged) over
episodes so every episode's gradient is exactly its own, and Adam/SGD update elementwise. So grouping changes speed, not results. In `--tune norm` the
step (gather the bank views, affine, clamp, pool) is one compiled kernel where that pays
(`fused.py`; `compile=False` keeps it eager).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, vmap

from . import folded, fused, logreg
from .config import FLOAT32_MAX, TUNE_DEFAULTS
from .losses import combined_loss
from .runtime import as_compute_float, keep_freed_memory
from .split import BackboneSplit

VIEW_STREAM = 1  # tag mixed into the per-episode seed for the view-sampling stream
QUERY_CHUNK_BYTES = 128 << 20  # query features classified at once


@dataclass
class FinetuneConfig:
    """Hyperparameters of one fine-tuning method."""

    lam: float = 0.0  # 0 = plain cross-entropy
    contrastive: str = "schane"  # the lam-weighted term: losses.CONTRASTIVE_TERMS
    tau: float = 0.5
    beta: float = 1.0
    detach_weights: bool = False
    views: int = 2
    steps: int = TUNE_DEFAULTS["norm"]["steps"]  # bench run's default mode
    lr: float = TUNE_DEFAULTS["norm"]["lr"]
    # the cosine head's lr is head_lr_factor x lr when backbone tensors train with it (the
    # usual "lower backbone lr than the head's"); a head trained alone uses lr itself
    head_lr_factor: float = TUNE_DEFAULTS["norm"]["head_lr_factor"]
    optimizer: str = "adam"
    weight_decay: float = 0.0
    logit_scale: float = 10.0
    # also classify the queries after these many steps (each <= steps): one run then gives
    # the accuracy every shorter run would have had (same view schedule prefix, no lr schedule)
    eval_steps: tuple[int, ...] = ()


@dataclass
class EpisodeResults:
    """Per-episode outcome arrays for one group of episodes and one method."""

    accuracy: np.ndarray
    loss_before: np.ndarray
    loss_after: np.ndarray
    failed: np.ndarray  # bool
    reason: list[str]
    seconds: float  # wall time of the whole group
    loss_curve: np.ndarray  # [G, steps]: the training loss at every step
    query_embeddings: np.ndarray | None = None  # [G, N*Q, D] after fine-tuning, if asked
    class_accuracy: np.ndarray | None = None  # [G, N]: accuracy on each class's queries
    step_accuracy: np.ndarray | None = None  # [G, len(eval_steps)], NaN where failed


def view_schedule(seed: int, episode: int, steps: int, n_images: int, views: int,
                  bank_views: int) -> np.ndarray:
    """Which bank views each support image shows at each step: int [steps, n_images, views].

    Derived from (run seed, episode index) only, so it does not depend on grouping or order,
    and every method of an episode sees exactly the same augmented support batches: the
    methods differ only in their loss, which is what a paired comparison wants.
    """
    rng = np.random.default_rng([seed, episode, VIEW_STREAM])
    keys = rng.random((max(steps, 1), n_images, bank_views))
    return np.argsort(keys, axis=-1)[..., :views]


def _make_optimizer(params: list[Tensor], cfg: FinetuneConfig,
                    head: list[Tensor] = ()) -> torch.optim.Optimizer:
    """The optimiser of `params` at cfg.lr and of `head` at cfg.head_lr_factor x cfg.lr
    (at cfg.lr when `params` is empty: a head trained alone, as in --tune head)."""
    head_lr = cfg.lr * cfg.head_lr_factor if params else cfg.lr
    groups = [g for g in ({"params": list(params), "lr": cfg.lr},
                          {"params": list(head), "lr": head_lr}) if g["params"]]
    # fused Adam: one pass over the parameters per step, not ~10 (the per-tensor loop
    # dominated a --tune last step, whose per-episode parameters are millions of numbers)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def optimizer_step(opt: torch.optim.Optimizer) -> str:
    """`opt.step()`; the reason its episodes fail when a learning rate or weight decay
    overflows float32 in it, else "". The configurations refuse such values
    (config.check_float32_step); this keeps any that slip through a recorded failure rather
    than a traceback, and checks first because the fused Adam kernels do not raise but
    write inf ("value cannot be converted to type float without overflow" is what the
    others raise)."""
    for group in opt.param_groups:
        # Adam's first step is lr / (1 - beta1)
        step = group["lr"] / (1 - group["betas"][0]) if "betas" in group else group["lr"]
        if max(step, group.get("weight_decay", 0.0)) > FLOAT32_MAX:
            return (f"the optimiser overflowed float32 (lr {group['lr']:g}, weight decay "
                    f"{group.get('weight_decay', 0.0):g}); lower --lr or --weight-decay")
    try:
        opt.step()
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        return f"the optimiser overflowed float32 ({exc}); lower --lr or --weight-decay"
    return ""


def finite_episodes(*tensors: Tensor) -> Tensor:
    """bool [G]: whether every value of each episode (leading dimension) of each tensor is
    finite. An argmax over NaN scores picks a class anyway, so it must not count as a result."""
    return torch.stack([torch.isfinite(t).flatten(1).all(1) for t in tensors]).all(0)


def first_reasons(*causes: tuple[Tensor, str]) -> list[str]:
    """Per episode, the reason of the first (failed mask [G], reason) cause that holds, else ""."""
    masks = [(m.cpu().numpy(), why) for m, why in causes]
    return [next((why for m, why in masks if m[i]), "") for i in range(len(masks[0][0]))]


class EpisodeFinetuner:
    """Fine-tunes groups of episodes on a feature bank.

    `bank` is [M, A, *F]: M images (bank rows), A views each (view 0 clean). Episode index
    arrays refer to bank rows.
    """

    def __init__(self, split: BackboneSplit, bank: Tensor, *, ways: int, shots: int,
                 device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
                 compile: bool = True):
        keep_freed_memory()
        # torch.compile the training step where the trained part has a fused kernel and the
        # step is large enough to repay it (fused.py); False: always eager
        self.compile = compile
        self.compiled_step = False  # whether the compiled step ran (recorded in run.json)
        self.split = split
        self.bank = bank
        self.flat_bank = bank.flatten(0, 1)  # a view: index_select on it is the fast gather
        self.ways, self.shots = ways, shots
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.upper = split.upper.eval().to(self.device)
        # a convolutional upper part runs with episodes folded into channels (folded.py),
        # else under vmap
        self.folded = folded.fold(self.upper)
        named = dict(self.upper.named_parameters())
        self.params0 = {n: named[n].detach() for n in split.trainable}
        self.frozen = {n: p.detach() for n, p in named.items() if n not in self.params0}
        self.frozen.update({n: b for n, b in self.upper.named_buffers()})
        self.support_labels = torch.arange(ways, device=self.device).repeat_interleave(shots)
        self._view_z: Tensor | None = None  # pretrained embeddings of every bank view, lazily
        with torch.no_grad():
            # pretrained embeddings of every clean image: ProtoNet and head initialisation
            self.clean_embeddings = torch.cat([
                F.normalize(self._forward_shared(bank[i:i + 256, 0]), dim=-1)
                for i in range(0, len(bank), 256)
            ])

    # -- forward passes -------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _forward_shared(self, x: Tensor) -> Tensor:
        with self._autocast():
            return as_compute_float(self.upper(x))

    def _forward_episodes(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """x [G, B, *F] with per-episode params [G, ...] -> embeddings [G, B, D]."""
        if not params:
            return self._forward_shared(x.flatten(0, 1)).view(*x.shape[:2], -1)
        if hasattr(self.upper, "forward_episodes"):  # a hand-batched fast path
            with self._autocast():
                return as_compute_float(self.upper.forward_episodes(params, x))
        frozen = self.frozen
        if self.folded is not None:
            with self._autocast():
                return as_compute_float(self.folded.forward_episodes({**params, **frozen}, x))

        def one(p: dict[str, Tensor], xe: Tensor) -> Tensor:
            return functional_call(self.upper, {**p, **frozen}, (xe,))

        with self._autocast():
            return as_compute_float(vmap(one)(params, x))

    def _forward_rows(self, params: dict[str, Tensor], rows: Tensor) -> Tensor:
        """Embeddings [G, B, D] of flat bank rows [G, B] under per-episode params: gather
        and trained part as one compiled kernel where there is one and it pays (fused.py),
        else gather, then `_forward_episodes`."""
        if (self.compile and params and hasattr(self.upper, "forward_rows")
                and fused.worth_compiling(rows.shape[1], self.bank.shape[2:], self.device)):
            with self._autocast():
                z = self.upper.forward_rows(params, self.flat_bank, rows)
            if z is not None:
                self.compiled_step = True
                return as_compute_float(z)
        x = self.flat_bank.index_select(0, rows.flatten()).view(*rows.shape, *self.bank.shape[2:])
        return self._forward_episodes(params, x)

    # -- methods --------------------------------------------------------------------
    def prototypes(self, support: Tensor, support_mask: Tensor | None = None) -> Tensor:
        """support [G, N*K] bank rows (class-major) -> normalised prototypes [G, N, D];
        `support_mask` [G, N*K] (imbalanced episodes): the mean over the real images only."""
        z = self.clean_embeddings[support].view(support.shape[0], self.ways, self.shots, -1)
        if support_mask is None:
            protos = z.mean(2)
        else:
            w = support_mask.view(*z.shape[:3], 1).to(z.dtype)
            protos = (z * w).sum(2) / w.sum(2).clamp_min(1)
        return F.normalize(protos, dim=-1)

    def protonet(self, support: Tensor, query: Tensor, support_mask: Tensor | None = None,
                 *, per_class: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Nearest class mean of the frozen pretrained embeddings (cosine): no training.
        Accuracy per episode [G] (with `per_class`: also per class, [G, N]); NaN for an
        episode whose embeddings, and so scores, are not finite (no result)."""
        protos = self.prototypes(support, support_mask)
        zq = self.clean_embeddings[query]
        scores = torch.einsum("gqd,gnd->gqn", zq, protos)
        pred = scores.argmax(-1)
        bad = (~finite_episodes(scores)).cpu().numpy()
        acc, class_acc = self._accuracy(pred, query.shape[1]), self._class_accuracy(pred)
        acc[bad], class_acc[bad] = np.nan, np.nan
        return (acc, class_acc) if per_class else acc

    def _accuracy(self, pred: Tensor, n_query: int) -> np.ndarray:
        q_labels = torch.arange(self.ways, device=pred.device).repeat_interleave(n_query // self.ways)
        return (pred == q_labels).sum(-1).cpu().numpy() / pred.shape[-1]

    def _class_accuracy(self, pred: Tensor) -> np.ndarray:
        """pred [G, N*Q] class-major -> accuracy of each class's queries [G, N]."""
        g, nq = pred.shape
        right = pred.view(g, self.ways, nq // self.ways) == torch.arange(
            self.ways, device=pred.device).view(1, -1, 1)
        return right.float().mean(-1).cpu().numpy().astype(np.float64)

    def _query_embeddings(self, params: dict[str, Tensor], query: Tensor) -> Tensor:
        """Fine-tuned embeddings of the clean queries, a few episodes at a time: the queries
        outnumber the support views, and their features would otherwise be the run's
        largest allocation."""
        per_episode = query.shape[1] * self.bank[0, 0].numel() * 4
        step = max(1, QUERY_CHUNK_BYTES // per_episode)
        clean = query * self.bank.shape[1]  # flat bank rows of the clean views (view 0)
        return torch.cat([
            F.normalize(self._forward_rows({n: p[i:i + step] for n, p in params.items()},
                                           clean[i:i + step]), dim=-1)
            for i in range(0, len(query), step)])

    def query_embeddings(self, query: Tensor) -> np.ndarray:
        """Pretrained (not fine-tuned) clean embeddings of the queries: [G, N*Q, D]."""
        return self.clean_embeddings[query].cpu().numpy()

    def finetune(self, support: Tensor, query: Tensor, episode_ids: np.ndarray, seed: int,
                 cfg: FinetuneConfig, *, support_mask: Tensor | None = None,
                 keep_embeddings: bool = False) -> EpisodeResults:
        """Fine-tune one group of episodes with one method; return per-episode results.
        `support_mask` [G, N*K]: the real support images of imbalanced episodes (padding
        slots then take no part in the head initialisation or the loss)."""
        t0 = time.perf_counter()
        g, nk = support.shape
        dev = self.device
        params = {n: p.unsqueeze(0).repeat(g, *[1] * p.dim()).requires_grad_()
                  for n, p in self.params0.items()}
        head = self.prototypes(support, support_mask).clone().requires_grad_()
        opt = _make_optimizer(list(params.values()), cfg, head=[head])
        a = self.bank.shape[1]
        schedule = self._schedule(episode_ids, seed, cfg, nk)
        labels = self.support_labels.repeat_interleave(cfg.views).expand(g, -1)
        instances = torch.arange(nk, device=dev).repeat_interleave(cfg.views).expand(g, -1)
        rows = support.unsqueeze(-1).expand(g, nk, cfg.views)
        valid = (None if support_mask is None
                 else support_mask.repeat_interleave(cfg.views, dim=1))  # [G, NK*V]

        def batch_loss(step: int) -> Tensor:
            flat = (rows * a + schedule[:, step]).view(g, -1)  # flat bank rows (image, view)
            z = F.normalize(self._forward_rows(params, flat), dim=-1)
            logits = cfg.logit_scale * torch.einsum("gbd,gnd->gbn", z, F.normalize(head, dim=-1))
            return combined_loss(logits, z, labels, lam=cfg.lam, tau=cfg.tau, beta=cfg.beta,
                                 detach_weights=cfg.detach_weights, contrastive=cfg.contrastive,
                                 instance_ids=instances, valid=valid)

        def predict() -> tuple[Tensor, Tensor]:
            with torch.no_grad():
                zq = self._query_embeddings(params, query)
                return torch.einsum("gqd,gnd->gqn", zq, F.normalize(head, dim=-1)).argmax(-1), zq

        failed = torch.zeros(g, dtype=torch.bool, device=dev)
        curve, at_steps, overflow = [], {}, ""
        if cfg.steps == 0:
            with torch.no_grad():
                loss_before = batch_loss(0)
        for step in range(cfg.steps):
            if step in cfg.eval_steps:
                at_steps[step] = predict()[0]
            loss = batch_loss(step)
            curve.append(loss.detach())
            if step == 0:
                loss_before = curve[0]
            bad = ~torch.isfinite(loss)
            if bad.any():
                failed |= bad
                loss = torch.where(bad, torch.zeros_like(loss), loss)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            overflow = optimizer_step(opt)
            if overflow:  # every episode of the group took the step
                failed[:] = True
                break
        with torch.no_grad():
            loss_after = batch_loss(0)
        pred, zq = predict()
        reasons = first_reasons(
            (failed | ~torch.isfinite(loss_after), overflow or "non-finite loss during fine-tuning"),
            (~finite_episodes(zq), "non-finite embeddings"))  # e.g. a NaN query image
        failed = torch.tensor([bool(r) for r in reasons])
        return self._results(pred, query.shape[1], reasons, loss_before, loss_after, curve, t0,
                             zq if keep_embeddings else None,
                             self._step_accuracy(cfg, at_steps, pred, query.shape[1], failed))

    # -- shared by the trained methods ------------------------------------------------
    def _schedule(self, episode_ids: np.ndarray, seed: int, cfg: FinetuneConfig,
                  n_images: int) -> Tensor:
        """[G, steps, NK, V]: the bank view each support image shows at each step."""
        return torch.from_numpy(np.stack([
            view_schedule(seed, int(e), cfg.steps, n_images, cfg.views, self.bank.shape[1])
            for e in episode_ids])).to(self.device)

    def _step_accuracy(self, cfg: FinetuneConfig, at_steps: dict[int, Tensor], final: Tensor,
                       n_query: int, failed: Tensor) -> np.ndarray | None:
        """[G, len(eval_steps)]: the query accuracy after each of `cfg.eval_steps` steps
        (`at_steps`: step -> predictions; the final step's are `final`), NaN where failed."""
        if not cfg.eval_steps:
            return None
        acc = np.stack([self._accuracy(at_steps.get(s, final), n_query)
                        for s in cfg.eval_steps], 1)
        acc[failed.cpu().numpy()] = np.nan
        return acc

    def _results(self, pred: Tensor, n_query: int, reasons: list[str], loss_before: Tensor,
                 loss_after: Tensor, curve: list[Tensor], t0: float,
                 query_embeddings: Tensor | None,
                 step_accuracy: np.ndarray | None = None) -> EpisodeResults:
        """Per-episode results of a group; an episode with a failure reason gets NaN
        accuracies."""
        failed_np = np.array([bool(r) for r in reasons], dtype=bool)
        acc, class_acc = self._accuracy(pred, n_query), self._class_accuracy(pred)
        acc[failed_np] = np.nan
        class_acc[failed_np] = np.nan
        curve_np = (torch.stack(curve, 1).cpu().numpy().astype(np.float64) if curve
                    else np.zeros((len(failed_np), 0)))
        return EpisodeResults(acc, loss_before.cpu().numpy().astype(np.float64),
                              loss_after.cpu().numpy().astype(np.float64), failed_np,
                              list(reasons), time.perf_counter() - t0,
                              curve_np,
                              None if query_embeddings is None else query_embeddings.cpu().numpy(),
                              class_acc, step_accuracy)

    # -- linear probe ---------------------------------------------------------------
    def _view_embeddings(self) -> Tensor:
        """Pretrained embeddings of every bank view, [M, A, D], computed once on first use
        in fixed chunks of bank rows (so a row's value never depends on the grouping)."""
        if self._view_z is None:
            chunks = [self.bank[i:i + 32] for i in range(0, len(self.bank), 32)]
            with torch.no_grad():
                self._view_z = torch.cat([
                    F.normalize(self._forward_shared(c.flatten(0, 1)), dim=-1).view(*c.shape[:2], -1)
                    for c in chunks])
        return self._view_z

    def linear_probe(self, support: Tensor, query: Tensor, episode_ids: np.ndarray, seed: int,
                     cfg: FinetuneConfig, *, support_mask: Tensor | None = None,
                     keep_embeddings: bool = False) -> EpisodeResults:
        """A linear classifier (zero-initialised weights) trained with CE on the frozen
        pretrained embeddings of the same augmented support batches the fine-tuning
        methods see (same view schedule, optimiser, lr and steps), then applied to the
        clean queries' embeddings. The backbone never changes; `logit_scale`, `lam` and
        the contrastive settings do not apply. Zero initialisation keeps it deterministic
        (the problem is convex, so the start hardly matters). No bias: on a balanced support
        set its gradient is exactly zero in theory, so Adam would turn float rounding
        noise into lr-sized steps."""
        t0 = time.perf_counter()
        g, nk = support.shape
        dev = self.device
        view_z = self._view_embeddings()
        weight = torch.zeros(g, self.ways, view_z.shape[-1], device=dev, dtype=view_z.dtype,
                             requires_grad=True)
        opt = _make_optimizer([weight], cfg)
        schedule = self._schedule(episode_ids, seed, cfg, nk)  # the fine-tuning methods' one
        labels = self.support_labels.repeat_interleave(cfg.views).expand(g, -1)
        rows = support.unsqueeze(-1).expand(g, nk, cfg.views)
        w = (torch.ones(g, nk * cfg.views, device=dev) if support_mask is None
             else support_mask.repeat_interleave(cfg.views, dim=1).float())

        def batch_loss(step: int) -> Tensor:
            z = view_z[rows, schedule[:, step]].flatten(1, 2)  # [G, NK*V, D], (image, view)
            logits = torch.einsum("gbd,gnd->gbn", z, weight)
            per = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
            return (per * w).sum(1) / w.sum(1)  # the mean over real support images

        zq = self.clean_embeddings[query]

        def predict() -> Tensor:
            with torch.no_grad():
                return torch.einsum("gqd,gnd->gqn", zq, weight).argmax(-1)

        curve, at_steps, overflow = [], {}, ""
        with torch.no_grad():
            loss_before = batch_loss(0)
        for step in range(cfg.steps):
            if step in cfg.eval_steps:
                at_steps[step] = predict()
            loss = batch_loss(step)
            curve.append(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            overflow = optimizer_step(opt)
            if overflow:
                break
        with torch.no_grad():
            loss_after = batch_loss(0)
        pred = predict()
        reasons = first_reasons(  # NaN features make the loss NaN too: name the cause
            (~finite_episodes(view_z[support], zq), "non-finite embeddings"),
            (~torch.isfinite(loss_after) | bool(overflow), overflow or "non-finite loss"))
        failed = torch.tensor([bool(r) for r in reasons])
        return self._results(pred, query.shape[1], reasons, loss_before, loss_after, curve, t0,
                             zq if keep_embeddings else None,
                             self._step_accuracy(cfg, at_steps, pred, query.shape[1], failed))

    # -- logistic regression (the authors' and RFS's evaluation) --------------------
    def logreg_inputs(self, support: Tensor, query: Tensor, views: int,
                      support_mask: Tensor | None = None):
        """What `logreg` fits and scores: support features [G, NK*A, D] (each image's clean
        view, then its first `views` augmented bank views: A = views + 1), their labels
        [G, NK*A], weights [G, NK*A] or None (padding of imbalanced episodes), and the
        clean query features [G, NQ, D]; all frozen pretrained embeddings."""
        g = support.shape[0]
        view_z = self._view_embeddings()
        a = min(views + 1, view_z.shape[1])
        xs = view_z[support][:, :, :a].flatten(1, 2)  # (image, view)
        labels = self.support_labels.repeat_interleave(a).expand(g, -1)
        weights = None if support_mask is None else support_mask.repeat_interleave(a, dim=1)
        return xs, labels, weights, self.clean_embeddings[query]

    def logreg(self, support: Tensor, query: Tensor, *, views: int, C: float = 1.0,
               solver: str = "torch", support_mask: Tensor | None = None,
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """L2 logistic regression (``logreg.py``) on `logreg_inputs`, applied to the clean
        queries. Per episode: accuracy [G], per-class accuracy [G, N], and a failure reason
        ("" when it ran): an episode whose features are not finite fails."""
        xs, labels, weights, zq = self.logreg_inputs(support, query, views, support_mask)
        finite = torch.isfinite(xs).flatten(1).all(1) & torch.isfinite(zq).flatten(1).all(1)
        pred = torch.zeros(query.shape, dtype=torch.long, device=query.device)
        ok = finite.nonzero().flatten()
        if len(ok):
            pred[ok] = logreg.fit_predict(
                xs[ok], labels[ok], zq[ok], self.ways, C=C, solver=solver,
                weights=None if weights is None else weights[ok]).to(pred.device)
        reasons = ["" if bool(f) else "non-finite embeddings" for f in finite]
        return self._accuracy(pred, query.shape[1]), self._class_accuracy(pred), reasons
