"""Full-data fine-tuning: train the whole backbone on a whole split, save timm weights.

The paper's other setting (besides few-shot episodes): fine-tune every layer of the
pretrained backbone on all images of a split with minibatches, a classifier head over the
split's classes, and the loss ``(1 - lambda) CE + lambda SCHaNe`` (``losses.combined_loss``;
``method="ce"`` is lambda = 0). Every image in a batch shows ``views`` random-resized-crop
+ flip views (bank.py's augmentation); the views share the image's label, so each anchor
has a positive even when its class appears once in the batch.

Top-1 accuracy is measured after every epoch on a seeded, stratified per-class holdout of
the split's images that never enters a training batch. Images that are drawings of the same
thing (the emoji data set's Noto and Twemoji versions of one emoji: ``meta["unified"]``) are
held out together, or the holdout would measure recall of near-duplicates.

The result is a timm-format weight file (the backbone's state dict, no classifier), so
``create_backbone(name, weights=PATH)`` and ``bench run --weights PATH`` load it, and a JSON
record next to it. Everything random comes from the seed: the holdout from (seed), each
epoch's batch order from (seed, epoch), each image's views from (seed, epoch, image), the
head's initialisation from (seed); CE and SCHaNe therefore see exactly the same batches.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .backbones import backbone_data_config, create_backbone, default_input_size
from .bank import augmented_views, interpolation_mode
from .config import (MAX_IMAGE_SIZE, MAX_STEPS, SCHANE_FORM, check_float32_step,
                     check_split_ratios)
from .data import create_dataset
from .errors import BenchError, RunFailed
from .fileio import atomic_open, file_sha256, folder_lock, write_atomic
from .finetune import optimizer_step
from .losses import combined_loss
from .results import own_folder_record
from .runner import environment_record, resolve_device
from .runtime import keep_freed_memory

__all__ = ["FullFinetuneConfig", "FullFinetuneResult", "finetune_full", "holdout_split"]

FT_METHODS = ("ce", "schane", "schane-perpos")  # schane: the authors' loss
HEADS = ("cosine", "linear")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_EPOCHS = 5
MAX_EPOCHS = 10_000  # and MAX_STEPS, MAX_IMAGE_SIZE from config: typos, not real runs
HEAD_LR_FACTOR = 10.0  # the new head learns 10x faster than the pretrained backbone
RECORD = "finetune.json"
WEIGHTS = "weights.pth"
KIND = "fewshot-bench full fine-tune"
# settings that may differ between a finished fine-tune and a later call for the same folder
REUSE_FREE = {"out", "data_root"}
# tags that keep the random streams apart
_HOLDOUT_STREAM, _ORDER_STREAM, _VIEW_STREAM = 11, 12, 13
_EVAL_CHUNK = 256


@dataclass
class FullFinetuneConfig:
    """Settings of one full-data fine-tune; `validate()` checks them before any work."""

    dataset: str = "emoji"
    data_root: str | None = None
    split: str = "train"
    split_ratios: str | None = None  # folder:PATH's automatic split; None: 0.6:0.2:0.2
    method: str = "schane"  # ce (lambda = 0), schane or schane-perpos (losses.py)
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None  # start from this timm-format file instead of pretrained
    image_size: int | None = None  # None: the data set's, else the backbone's
    epochs: int | None = None  # None: `steps` if given, else DEFAULT_EPOCHS
    steps: int | None = None  # total optimiser steps (instead of epochs)
    batch_size: int = 32  # images per step; each shows `views` views
    views: int = 2
    lr: float = 1e-4  # backbone; the head uses HEAD_LR_FACTOR x lr
    weight_decay: float = 0.0
    lam: float = 0.9
    tau: float = 0.5  # the authors' few-shot command (GLA-IR/SCHaNe README)
    beta: float = 1.0
    detach_weights: bool = False
    schane_form: str = SCHANE_FORM  # recorded, as in RunConfig: which loss `schane` is
    head: str = "cosine"
    logit_scale: float = 10.0  # cosine head only
    holdout: float = 0.2
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def validate(self) -> "FullFinetuneConfig":
        def bad(msg: str) -> None:
            raise BenchError(msg)

        if self.method not in FT_METHODS:
            bad(f"Unknown --method '{self.method}' for bench finetune. Use "
                f"{', '.join(FT_METHODS)}.")
        if self.schane_form != SCHANE_FORM:
            bad(f"schane_form {self.schane_form!r} is not this version's ({SCHANE_FORM!r}); "
                "the per-positive form is --method schane-perpos.")
        self.split_ratios = check_split_ratios(self.dataset, self.split_ratios)
        for name in ("lr", "weight_decay", "lam", "tau", "beta", "logit_scale", "holdout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                flag = "--lambda" if name == "lam" else "--" + name.replace("_", "-")
                bad(f"{flag} must be a finite number (got {value}).")
        if self.views < 1:
            bad(f"--views must be at least 1 (got {self.views}).")
        if self.method != "ce" and self.views < 2:
            bad(f"--views {self.views} with --method {self.method}: the contrastive term needs at least "
                "two augmented views of every image (they are each other's positives). Use "
                "--views 2 or more, or --method ce.")
        if self.epochs is not None and self.steps is not None:
            bad("Give either --epochs or --steps, not both.")
        if self.epochs is not None and self.epochs < 1:
            bad(f"--epochs must be at least 1 (got {self.epochs}).")
        if self.steps is not None and self.steps < 1:
            bad(f"--steps must be at least 1 (got {self.steps}).")
        if self.batch_size < 2:
            bad(f"--batch-size must be at least 2 images (got {self.batch_size}): batch norm "
                "and the contrastive term need more than one image per step.")
        if not 0.0 < self.holdout < 1.0:
            bad(f"--holdout must lie strictly between 0 and 1 (got {self.holdout}); it is the "
                "fraction of each class's images kept out of training for evaluation, e.g. 0.2.")
        if not 0.0 <= self.lam <= 1.0:
            bad(f"--lambda must lie in [0, 1] (got {self.lam}): 0 is plain CE, 1 is SCHaNe alone.")
        if not self.tau > 0:
            bad(f"--tau must be positive (got {self.tau}); 0.5 is the authors' value.")
        if self.beta < 0:
            bad(f"--beta must be >= 0 (got {self.beta}); 0 turns hard-negative weighting off.")
        if not self.lr > 0:
            bad(f"--lr must be positive (got {self.lr}).")
        if self.weight_decay < 0:
            bad(f"--weight-decay must be >= 0 (got {self.weight_decay}).")
        # the head learns at HEAD_LR_FACTOR x lr, with AdamW
        check_float32_step(self.lr, self.weight_decay, "adamw", "1e-4 is the default.",
                           lr_factor=HEAD_LR_FACTOR)
        if self.head not in HEADS:
            bad(f"Unknown --head '{self.head}'. Use cosine or linear.")
        if self.logit_scale <= 0:
            bad(f"--logit-scale must be positive (got {self.logit_scale}).")
        if self.image_size is not None and not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            bad(f"--image-size must be between 16 and {MAX_IMAGE_SIZE} pixels (got "
                f"{self.image_size}); leave it out for the data set's or backbone's size.")
        # bounds far above real use, as bench run's: a typo is refused before any work
        if self.epochs is not None and self.epochs > MAX_EPOCHS:
            bad(f"--epochs must be at most {MAX_EPOCHS} (got {self.epochs}).")
        if self.steps is not None and self.steps > MAX_STEPS:
            bad(f"--steps must be at most {MAX_STEPS} (got {self.steps}).")
        if self.seed < 0:
            bad(f"--seed must be 0 or more (got {self.seed}).")
        if self.device not in DEVICES:
            bad(f"Unknown --device '{self.device}'. Use auto, cpu or cuda.")
        return self

    @property
    def effective_lambda(self) -> float:
        return self.lam if self.method != "ce" else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FullFinetuneResult:
    out_dir: Path
    weights_path: Path
    weights_sha256: str
    history: list[dict]  # per epoch: epoch, step, train_loss, holdout_top1
    holdout_top1: float
    record: dict
    text: str
    train_ids: np.ndarray = field(repr=False)
    holdout_ids: np.ndarray = field(repr=False)
    reused: bool = False  # True: `out` already held this finished fine-tune; nothing ran


# --------------------------------------------------------------------------------------
# The holdout and the batches: pure functions of the seed.
# --------------------------------------------------------------------------------------


def holdout_split(labels: np.ndarray, fraction: float, seed: int,
                  groups: np.ndarray | None = None,
                  class_names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified holdout: (train ids, holdout ids), both sorted.

    In every class, round(fraction * units) units are held out, where a unit is an image or,
    with `groups`, all images of the class sharing a group key (held out together). Raises
    BenchError when a class would be left with no training or no held-out image.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, _HOLDOUT_STREAM])
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keys = np.asarray(groups)[members] if groups is not None else members
        units = np.unique(keys)
        n_hold = int(round(fraction * len(units)))
        if n_hold < 1 or n_hold >= len(units):
            name = class_names[c] if class_names is not None else str(c)
            unit = "distinct items (drawings of one item are held out together)" \
                if groups is not None else "images"
            if len(units) < 2:
                raise BenchError(
                    f"Class '{name}' of this split has {len(members)} image(s) but only "
                    f"{len(units)} of its {unit}, so it cannot be both trained on and held "
                    "out. Use a split with at least two per class.")
            what = "no held-out image" if n_hold < 1 else "no training image"
            raise BenchError(
                f"--holdout {fraction} leaves class '{name}' ({len(members)} images, "
                f"{len(units)} {unit}) with {what}. Every class needs at least one training "
                f"and one held-out image: choose a --holdout between {1 / len(units):.3g} "
                f"and {1 - 1 / len(units):.3g}, or a split with more images per class.")
        chosen = rng.permutation(units)[:n_hold]
        held.append(members[np.isin(keys, chosen)])
    holdout = np.sort(np.concatenate(held)) if held else np.empty(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), holdout)
    return train, holdout


def epoch_order(train_ids: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training images of `epoch` in batch order (a seeded permutation)."""
    return np.random.default_rng([seed, _ORDER_STREAM, epoch]).permutation(train_ids)


def _training_views(images: np.ndarray, ids: np.ndarray, *, views: int, size: int,
                    interpolation, seed: int, epoch: int) -> Tensor:
    """uint8 [len(ids) * views, 3, S, S], image-major: random resized crops with flips,
    each image's from its own stream (seed, epoch, image)."""
    out = []
    for i in ids:
        image = torch.from_numpy(images[i]).permute(2, 0, 1)
        rng = np.random.default_rng([seed, _VIEW_STREAM, epoch, int(i)])
        out.append(augmented_views(image, views + 1, size, rng, interpolation)[1:])
    return torch.cat(out)


def _clean_views(images: np.ndarray, ids: np.ndarray, size: int, interpolation) -> Tensor:
    """uint8 [len(ids), 3, S, S]: the whole image resized (bank.py's view 0)."""
    rng = np.random.default_rng(0)  # unused: one view is the clean one
    return torch.cat([augmented_views(torch.from_numpy(images[i]).permute(2, 0, 1), 1, size,
                                      rng, interpolation) for i in ids])


# --------------------------------------------------------------------------------------
# The model: backbone + head.
# --------------------------------------------------------------------------------------


class _Head(nn.Module):
    """Linear, or cosine (scaled cosine similarity to one weight vector per class)."""

    def __init__(self, dim: int, classes: int, kind: str, scale: float, generator):
        super().__init__()
        self.kind, self.scale = kind, scale
        self.weight = nn.Parameter(torch.randn(classes, dim, generator=generator) * 0.01)
        self.bias = nn.Parameter(torch.zeros(classes)) if kind == "linear" else None

    def forward(self, f: Tensor) -> Tensor:
        if self.kind == "cosine":
            return self.scale * F.normalize(f, dim=-1) @ F.normalize(self.weight, dim=-1).T
        return F.linear(f, self.weight, self.bias)


class _Normalise:
    def __init__(self, mean, std, device):
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.device = device

    def __call__(self, x: Tensor) -> Tensor:
        x = (x.to(self.device).float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _holdout_top1(model, head, clean: Tensor, labels: Tensor, norm: _Normalise) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(clean), _EVAL_CHUNK):
        logits = head(model(norm(clean[start:start + _EVAL_CHUNK])))
        correct += int((logits.argmax(-1).cpu() == labels[start:start + _EVAL_CHUNK]).sum())
    model.train()
    return correct / max(len(clean), 1)


# --------------------------------------------------------------------------------------
# The output folder.
# --------------------------------------------------------------------------------------


def default_out_dir(cfg: FullFinetuneConfig) -> Path:
    """results/finetune/<time>-<dataset>-<split>-<backbone>-<method>, counter if taken."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{cfg.dataset}-{cfg.split}-{cfg.backbone}-{cfg.method}"
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    path, n = Path("results") / "finetune" / name, 1
    while path.exists():
        n += 1
        path = path.with_name(f"{name}-{n}")
    return path


def _check_out(cfg: FullFinetuneConfig, out: Path) -> dict | None:
    """The finished record when `out` holds this very fine-tune; None for a new or empty
    folder, or one whose fine-tune never finished (stopped or failed: it saved no weights,
    so it is replaced, whatever its settings). Anything else is refused before any work."""
    fix = ("Choose another --out, or leave --out out for a new time-stamped folder under "
           "results/finetune/.")
    previous = own_folder_record(out, RECORD, KIND, "bench finetune", fix,
                                 {"config": dict, "weights": dict})
    if previous is None or not previous.get("finished"):
        return None
    before = previous["config"]
    now = cfg.to_dict()
    differing = [k for k in now if k not in REUSE_FREE and before.get(k) != now[k]]
    if differing:
        changes = "; ".join(f"{k}: {before.get(k)!r} there, {now[k]!r} now" for k in differing)
        raise BenchError(
            f"The folder {out} holds a fine-tune with other settings ({changes}); it is not "
            "overwritten. Choose another --out for the new settings, or delete the folder to "
            "replace it.")
    weights = out / WEIGHTS
    if not weights.is_file() or file_sha256(weights) != previous.get("weights", {}).get("sha256"):
        raise BenchError(
            f"{weights} is missing or does not match the sha256 in {out / RECORD}: it was "
            "changed after the fine-tune. Delete the folder to fine-tune again, or choose "
            "another --out.")
    return previous


def _write_record(out: Path, record: dict) -> None:
    write_atomic(out / RECORD, json.dumps(record, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------------------
# The entry point.
# --------------------------------------------------------------------------------------


def finetune_full(cfg: FullFinetuneConfig, progress: bool = True,
                  echo: Callable[[str], None] = print) -> FullFinetuneResult:
    """Fine-tune the whole backbone of `cfg` on its split; write weights and a record.

    Returns the per-epoch history and where the weights are. When `cfg.out` already holds
    this fine-tune, finished, it is returned as it is (`reused=True`) and nothing runs.
    """
    with contextlib.ExitStack() as held:  # the output folder's lock, once taken
        return _finetune_full(cfg, progress, echo, held)


def _finetune_full(cfg: FullFinetuneConfig, progress: bool, echo: Callable[[str], None],
                   held: contextlib.ExitStack) -> FullFinetuneResult:
    cfg.validate()
    device = resolve_device(cfg.device)
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg)
    previous = _check_out(cfg, out)
    ours = (out / RECORD).is_file()  # a fine-tune folder: keep others out, then read it afresh
    if ours:
        held.enter_context(folder_lock(out))
        previous = _check_out(cfg, out)
        if previous is None:
            echo(f"{out} holds a fine-tune that never finished (no weights were saved); "
                 "it is replaced.")

    data = create_dataset(cfg.dataset, cfg.split, cfg.data_root, split_ratios=cfg.split_ratios,
                          image_size=cfg.image_size or default_input_size(cfg.backbone))
    groups = data.meta.get("unified")
    if groups is not None and len(groups) != len(data):
        groups = None
    train_ids, holdout_ids = holdout_split(data.labels, cfg.holdout, cfg.seed, groups,
                                           data.class_names)
    if previous is not None:
        return _reused(previous, out, train_ids, holdout_ids, echo)
    if cfg.batch_size > len(train_ids):
        raise BenchError(
            f"--batch-size {cfg.batch_size} is larger than the {len(train_ids)} training images "
            f"of {cfg.dataset}/{cfg.split} after the holdout. Use a smaller --batch-size.")

    model = create_backbone(cfg.backbone, weights=cfg.weights)
    data_cfg = backbone_data_config(model)
    size = cfg.image_size or data.meta.get("image_size") or data_cfg["input_size"][-1]
    interp = interpolation_mode(data_cfg.get("interpolation", "bicubic"))
    steps_per_epoch = len(train_ids) // cfg.batch_size  # the remainder waits for the next epoch
    total = cfg.steps if cfg.steps is not None else (cfg.epochs or DEFAULT_EPOCHS) * steps_per_epoch

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"Cannot create the output folder {out} ({exc.strerror}). Pass a "
                         "writable folder with --out.") from exc
    if not ours:  # a new folder: lock it; nobody may have begun a fine-tune there since
        held.enter_context(folder_lock(out))
        if (out / RECORD).exists():
            raise BenchError(f"Another bench command started a fine-tune in {out} while this "
                             "one was reading its inputs. Run this command again once it is "
                             "done, or choose another --out.")
    record = {
        "kind": KIND, "config": cfg.to_dict(), "out_dir": str(out),
        "method": {"name": cfg.method, "lambda": cfg.effective_lambda,
                   "loss": f"(1 - lambda) CE + lambda {cfg.method} (losses.combined_loss)"},
        "data": {"dataset": data.dataset, "split": data.split, "classes": data.num_classes,
                 "images": len(data), "train_images": len(train_ids),
                 "holdout_images": len(holdout_ids), "image_size": int(size),
                 "holdout_grouped_by": "unified" if groups is not None else None,
                 "source": str(data.meta.get("source")) if data.meta.get("source") else None,
                 "holdout_ids": holdout_ids.tolist()},
        "schedule": {"steps": total, "steps_per_epoch": steps_per_epoch,
                     "epochs": round(total / steps_per_epoch, 3), "batch_size": cfg.batch_size,
                     "views": cfg.views, "optimizer": "adamw", "lr_schedule": "cosine",
                     "head_lr": cfg.lr * HEAD_LR_FACTOR},
        "backbone": {"name": cfg.backbone, "start_weights": getattr(model, "weights_source", None),
                     "data_config": {k: (list(v) if isinstance(v, tuple) else v)
                                     for k, v in data_cfg.items()}},
        "started": _dt.datetime.now().isoformat(timespec="seconds"), "finished": None,
        **environment_record(device),
    }
    _write_record(out, record)  # marks the folder as a fine-tune from now on
    echo(f"fine-tuning {cfg.backbone} on {cfg.dataset}/{cfg.split} with {cfg.method}: "
         f"{len(train_ids)} training images, {len(holdout_ids)} held out, "
         f"{data.num_classes} classes, {size} px, {total} steps of {cfg.batch_size} images x "
         f"{cfg.views} views; output in {out}")

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # dropout / drop-path, where a backbone has them
        history, train_seconds = _train(cfg, model, data, train_ids, holdout_ids, size, interp,
                                        data_cfg, device, total, steps_per_epoch, progress)

    weights_path = out / WEIGHTS
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_open(weights_path, "wb") as f:
        torch.save(state, f)
    for stale in out.glob(f".{WEIGHTS}.*.tmp"):  # left by a fine-tune killed mid-write
        stale.unlink(missing_ok=True)
    sha = file_sha256(weights_path)
    images_per_s = total * cfg.batch_size / max(train_seconds, 1e-9)
    record.update(
        history=history, holdout_top1=history[-1]["holdout_top1"],
        weights={"path": str(weights_path), "sha256": sha, "format":
                 "timm state_dict without the classifier (num_classes=0)",
                 "load": f"create_backbone({cfg.backbone!r}, weights=PATH)"},
        timing={"train_seconds": round(train_seconds, 2),
                "images_per_second": round(images_per_s, 2),
                "views_per_second": round(images_per_s * cfg.views, 2)},
        finished=_dt.datetime.now().isoformat(timespec="seconds"))
    _write_record(out, record)
    return FullFinetuneResult(out, weights_path, sha, history, history[-1]["holdout_top1"],
                              record, _summary(record), train_ids, holdout_ids)


def _train(cfg, model, data, train_ids, holdout_ids, size, interp, data_cfg, device, total,
           steps_per_epoch, progress) -> tuple[list[dict], float]:
    keep_freed_memory()
    model.to(device, memory_format=torch.channels_last).train()
    generator = torch.Generator().manual_seed(cfg.seed)
    head = _Head(model.num_features, data.num_classes, cfg.head, cfg.logit_scale,
                 generator).to(device)
    opt = torch.optim.AdamW([
        {"params": list(model.parameters()), "lr": cfg.lr},
        {"params": list(head.parameters()), "lr": cfg.lr * HEAD_LR_FACTOR},
    ], weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    norm = _Normalise(data_cfg["mean"], data_cfg["std"], device)
    clean = _clean_views(data.images, holdout_ids, size, interp)
    clean_labels = torch.from_numpy(data.labels[holdout_ids])
    lam = cfg.effective_lambda

    history: list[dict] = []
    losses: list[Tensor] = []
    train_seconds = 0.0
    order = None
    bar = tqdm(total=total, desc=f"fine-tune ({cfg.method})", unit="step",
               disable=not progress, leave=False)
    for step in range(total):
        t0 = time.perf_counter()
        epoch, pos = divmod(step, steps_per_epoch)
        if pos == 0:
            order = epoch_order(train_ids, cfg.seed, epoch)
        ids = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        x = norm(_training_views(data.images, ids, views=cfg.views, size=size,
                                 interpolation=interp, seed=cfg.seed, epoch=epoch))
        y = torch.from_numpy(data.labels[ids]).repeat_interleave(cfg.views).to(device)
        f = model(x)
        loss = combined_loss(head(f), F.normalize(f, dim=-1), y, lam=lam, tau=cfg.tau,
                             beta=cfg.beta, detach_weights=cfg.detach_weights,
                             contrastive="schane" if cfg.method == "ce" else cfg.method)
        if not torch.isfinite(loss):
            bar.close()
            raise RunFailed(f"the training loss became {loss.item()} at step {step + 1}; "
                            "nothing was saved. Lower --lr (or raise --tau) and run again.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        overflow = optimizer_step(opt)
        if overflow:
            bar.close()
            raise RunFailed(f"the training stopped at step {step + 1}: {overflow}; nothing was "
                            "saved. Lower --lr (or --weight-decay) and run again.")
        sched.step()
        losses.append(loss.detach())
        train_seconds += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1].item():.3f}")
        if (step + 1) % steps_per_epoch == 0 or step + 1 == total:
            acc = _holdout_top1(model, head, clean, clean_labels, norm)
            history.append({"epoch": round((step + 1) / steps_per_epoch, 3), "step": step + 1,
                            "train_loss": float(torch.stack(losses).mean()),
                            "holdout_top1": acc})
            losses = []
    bar.close()
    model.eval()
    return history, train_seconds


def _summary(record: dict) -> str:
    cfg, data = record["config"], record["data"]
    m = record["method"]
    loss = ("CE" if cfg["method"] == "ce" else
            f"(1 - {m['lambda']}) CE + {m['lambda']} SCHaNe (tau={cfg['tau']}, beta={cfg['beta']})")
    lines = [f"{cfg['backbone']} fine-tuned on {data['dataset']}/{data['split']} "
             f"({data['classes']} classes, {data['train_images']} training images, "
             f"{data['holdout_images']} held out, {data['image_size']} px) with {loss}, "
             f"{cfg['views']} views per image",
             "", "  epoch   step   train loss   holdout top-1"]
    for h in record["history"]:
        lines.append(f"  {h['epoch']:>5g}  {h['step']:>5d}   {h['train_loss']:>10.4f}   "
                     f"{100 * h['holdout_top1']:>12.2f}%")
    t = record["timing"]
    w = record["weights"]
    lines += ["", f"{record['schedule']['steps']} steps in {t['train_seconds']:.0f} s "
              f"({t['images_per_second']:.1f} images/s, {t['views_per_second']:.1f} views/s)",
              f"weights: {w['path']} (sha256 {w['sha256'][:16]}...)",
              f"use them: bench run --backbone {cfg['backbone']} --weights {w['path']}"]
    return "\n".join(lines)


def _reused(previous: dict, out: Path, train_ids, holdout_ids, echo) -> FullFinetuneResult:
    echo(f"{out} already holds this fine-tune (finished {previous.get('finished')}); nothing "
         "was run. Delete the folder or choose another --out to train again.")
    w = previous["weights"]
    return FullFinetuneResult(out, out / WEIGHTS, w["sha256"], previous["history"],
                              previous["holdout_top1"], previous, _summary(previous),
                              train_ids, holdout_ids, reused=True)

