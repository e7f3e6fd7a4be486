"""`bench transfer`: the SCHaNe paper's few-shot protocol in one resumable command.

The authors (GLA-IR/SCHaNe) fine-tune the backbone once on the base (train) classes with
(1 - lambda) CE + lambda SCHaNe, then score each novel episode with a logistic regression on
frozen features. Here, in one output folder:

1. `finetune/ce/` and `finetune/schane/`: `bench finetune` on the train split with CE and with
   SCHaNe: same holdout, same batches, same views (fulltune.py), only the loss differs;
2. `eval/<episode file>/{pretrained,ce,schane}/`: `bench run` on the same stored episodes of
   `--split` (test by default) with the frozen-backbone methods (`protonet`, `logreg`, and
   any per-episode methods asked for) on each of the three networks;
3. `report/`: `bench report` over every evaluation, whose paired table compares the three
   networks episode by episode (report/paired.py pairs one method across weights).

Every step resumes: a finished fine-tune or run is reused, an interrupted one continues or
restarts. Running again with other evaluation settings (e.g. `--shots 5`) adds an evaluation
and reuses the fine-tunes; other fine-tuning settings on the same folder are refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import split_ratios as ratios
from .config import RunConfig
from .errors import BenchError
from .fileio import folder_lock, write_atomic
from .fulltune import FullFinetuneConfig, finetune_full
from .report import build_report
from .results import RESUME_FREE, own_folder_record
from .runner import check_inputs, run as run_episodes

__all__ = ["TransferConfig", "TransferResult", "run_transfer", "NETWORKS", "RECORD"]

RECORD = "transfer.json"
KIND = "fewshot-bench transfer"
NETWORKS = ("pretrained", "ce", "schane")  # the pretrained backbone and its two fine-tunes
DEFAULT_METHODS = ("protonet", "logreg")


@dataclass
class TransferConfig:
    """`run`: the evaluation (data set, episodes, methods, SCHaNe's lambda/tau/beta, which
    the fine-tune shares); the rest: the fine-tune on the train split."""

    run: RunConfig = field(default_factory=lambda: RunConfig(methods=DEFAULT_METHODS))
    epochs: int | None = None  # None: finetune_steps if given, else fulltune.DEFAULT_EPOCHS
    finetune_steps: int | None = None  # total optimiser steps of each fine-tune, instead
    batch_size: int = 32
    finetune_lr: float = 1e-4  # AdamW on the backbone; its head at 10x (fulltune.py)
    out: str | None = None

    def validate(self) -> "TransferConfig":
        self.run.validate()
        if self.run.split == "train":
            raise BenchError("bench transfer fine-tunes on the train split, so its episodes must "
                             "come from another one: use --split test (default) or val.")
        train_share = ratios.fractions(self.run.split_ratios)[0]
        if self.run.dataset.startswith("folder:") and train_share == 0:
            raise BenchError(f"--split-ratios {self.run.split_ratios} gives {self.run.dataset} "
                             "no train classes, and bench transfer fine-tunes on them. Give the "
                             "train part a share, e.g. --split-ratios 0.6:0.2:0.2, or use "
                             "`bench run` to evaluate the folder without fine-tuning.")
        self.finetune_config("ce").validate()  # epochs, batch size, lr: refused before any work
        return self

    def finetune_config(self, method: str, out: Path | None = None) -> FullFinetuneConfig:
        r = self.run
        return FullFinetuneConfig(
            dataset=r.dataset, data_root=r.data_root, split="train", split_ratios=r.split_ratios,
            method=method, backbone=r.backbone, weights=r.weights, image_size=r.image_size,
            epochs=self.epochs, steps=self.finetune_steps, batch_size=self.batch_size,
            views=max(r.views, 2),
            lr=self.finetune_lr, lam=r.lam, tau=r.tau, beta=r.beta,
            detach_weights=r.detach_weights, seed=r.seed, device=r.device,
            out=None if out is None else str(out))

    def finetune_settings(self) -> dict:
        """What the fine-tunes depend on: a folder holds one pair of fine-tunes."""
        d = self.finetune_config("ce").to_dict()
        for k in ("method", "out", "data_root"):
            d.pop(k)
        return d


@dataclass
class TransferResult:
    out_dir: Path
    finetunes: dict  # ce / schane -> FullFinetuneResult
    runs: dict  # pretrained / ce / schane -> RunResult
    report: object  # report.Report
    text: str


def default_out_dir(cfg: TransferConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / "transfer" / f"{stamp}-{cfg.run.dataset.replace('/', '_').replace(':', '-')}"


def _check_out(out: Path, settings: dict) -> dict | None:
    """The previous record when `out` holds a transfer with these fine-tuning settings; None
    for a new or empty folder; BenchError for anything else."""
    fix = "Choose another --out, or leave --out out for a new folder under results/transfer/."
    previous = own_folder_record(out, RECORD, KIND, "bench transfer", fix,
                                 {"finetune": dict, "evaluations": list})
    if previous is None:
        return None
    before = previous["finetune"]
    changes = [f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in settings.items()
               if json.dumps(before.get(k)) != json.dumps(v)]
    if changes:
        raise BenchError(f"The folder {out} holds fine-tunes made with other settings "
                         f"({'; '.join(changes)}); they are not overwritten. Rerun with those "
                         "settings to add an evaluation, or choose another --out.")
    return previous


def run_transfer(cfg: TransferConfig, *, progress: bool = True,
                 echo: Callable[[str], None] = print) -> TransferResult:
    """Fine-tune with CE and SCHaNe on train, evaluate the three networks on the same
    stored episodes, report; see the module docstring."""
    cfg.validate()
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg)
    settings = cfg.finetune_settings()
    _check_out(out, settings)
    # the evaluation's backbone, data and episodes (e.g. --ways too many for the split) are
    # checked before the fine-tunes, which take minutes
    check_inputs(cfg.run)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"Cannot write the transfer folder {out} ({exc.strerror}). Pass a "
                         "writable folder with --out.") from exc
    with folder_lock(out):  # one transfer at a time in a folder
        return _run_transfer(cfg, out, settings, progress, echo)


def _run_transfer(cfg: TransferConfig, out: Path, settings: dict, progress: bool,
                  echo: Callable[[str], None]) -> TransferResult:
    previous = _check_out(out, settings)  # afresh, under the lock
    record = previous or {"kind": KIND, "finetune": settings, "evaluations": [],
                          "started": _dt.datetime.now().isoformat(timespec="seconds")}
    try:
        write_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise BenchError(f"Cannot write the transfer folder {out} ({exc.strerror}). Pass a "
                         "writable folder with --out.") from exc

    finetunes = {}
    for method in NETWORKS[1:]:
        echo(f"[transfer] fine-tune {method} on {cfg.run.dataset}/train")
        finetunes[method] = finetune_full(cfg.finetune_config(method, out / "finetune" / method),
                                          progress=progress, echo=echo)
        echo(finetunes[method].text)

    runs = {}
    key_dir = out / "eval" / evaluation_name(cfg.run)  # the name ignores weights and out
    for net in NETWORKS:
        weights = cfg.run.weights if net == "pretrained" else str(finetunes[net].weights_path)
        run_cfg = replace(cfg.run, weights=weights, out=str(key_dir / net))
        echo(f"[transfer] evaluate the {net} network on {cfg.run.dataset}/{cfg.run.split}")
        runs[net] = run_episodes(run_cfg, progress=progress, echo=echo)

    name = key_dir.relative_to(out).as_posix()
    if name not in record["evaluations"]:
        record["evaluations"].append(name)
    record["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    write_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    dirs = [out / e / net for e in record["evaluations"] for net in NETWORKS
            if (out / e / net / "run.json").is_file()]
    report = build_report(dirs, out / "report",
                          title=f"bench transfer: {cfg.run.dataset}, {cfg.run.backbone}")
    text = report.text + f"\nTransfer folder: {out} (fine-tunes in finetune/, runs in eval/)"
    return TransferResult(out, finetunes, runs, report, text)


def evaluation_name(cfg: RunConfig) -> str:
    """The folder of one evaluation: its protocol in words, then a hash of every setting
    that changes its results, so a changed option gets its own folder instead of a refused
    resume (the network's weights and where things are written are not part of it)."""
    shots = cfg.shots_dist or f"{cfg.shots}s"
    d = cfg.to_dict()
    for k in RESUME_FREE | {"weights"}:
        d.pop(k, None)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{cfg.split}-{cfg.ways}w{shots}{cfg.queries}q-{cfg.episodes}e-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
