"""Speed of the episode engine against the straightforward per-episode loop.

In one process and on the same stored episodes, times

  (a) the reference loop (`fewshot_bench.reference`): per episode, deep-copy the backbone,
      run the whole network on the support views every step, classify the queries;
  (b) the engine (`EpisodeFinetuner`): the frozen lower network once into a feature bank,
      then groups of episodes trained together on the bank, grouped as `bench run` does;

with the same protocol (views, schedule, loss, optimizer, head initialisation), so their
per-episode accuracies on the shared episodes must agree. Defaults follow
`fewshot_bench.config.RunConfig` (and the data set's own image size, as `bench run`).
In `--tune last` float32 agreement is only approximate: the two sum in other orders (the
bank runs the lower part channels-last, vmap'd kernels), and fine-tuning a whole stage
amplifies those last-bit differences step by step, the more the larger the lr.
`--float64` runs everything in float64, where the two agree to rounding
(tests/test_last_agreement.py).

    .venv/bin/python benchmarks/speed.py                  # 5-way 1-shot, tune=norm
    .venv/bin/python benchmarks/speed.py --shots 5 --reference-episodes 3
    .venv/bin/python benchmarks/speed.py --tune last --float64   # agreement, not speed
    .venv/bin/python benchmarks/throughput.py             # the default and --tune full

The last line is ``speedup=<engine eps / reference eps> max_acc_diff=<x>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fewshot_bench import fused
from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.bank import build_bank, normalised_views
from fewshot_bench.config import TUNE_MODES, RunConfig
from fewshot_bench.data import create_dataset
from fewshot_bench.finetune import EpisodeFinetuner
from fewshot_bench.reference import reference_finetune_episode
from fewshot_bench.runner import episode_batch_size, episodes_for, method_config, resolve_device
from fewshot_bench.split import split_backbone

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def parse_args(argv=None) -> argparse.Namespace:
    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--episodes", type=int, default=100, help="episodes timed with the engine")
    p.add_argument("--reference-episodes", type=int, default=5,
                   help="episodes timed with the reference loop (the first ones, shared)")
    p.add_argument("--shots", type=int, default=d.shots)
    p.add_argument("--tune", choices=TUNE_MODES, default=d.tune)
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps per episode (default: the --tune mode's)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the --tune mode's)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size [default: the data set's, as bench run]")
    p.add_argument("--methods", default=",".join(d.trained_methods),
                   help="trained methods to time (comma list)")
    p.add_argument("--episode-batch", type=int, default=None,
                   help="episodes trained together, as bench run's --episode-batch "
                        "[default: what bench run chooses from memory]")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads [default: torch's own choice]")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=d.compile,
                   help="the engine's compiled --tune norm step, as bench run's --compile "
                        "(its compile time counts in the engine's time)")
    p.add_argument("--float64", action="store_true",
                   help="model, inputs, bank and training in float64: the agreement then "
                        "separates real differences from float32 rounding (which fine-tuning "
                        "`last` amplifies); its times are float64's, not the engine's")
    p.add_argument("--episodes-dir", default=str(ROOT / "episodes"),
                   help="stored episodes (sampled and stored there if missing)")
    return p.parse_args(argv)


def _step_kind(cfg: RunConfig, engine: EpisodeFinetuner) -> str:
    if engine.compiled_step:
        return "compiled, its compile time included"
    if cfg.compile and fused.compile_error():
        return f"eager: compiling failed ({fused.compile_error()})"
    return "eager" + ("" if cfg.compile else ", --no-compile")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(shots=args.shots, tune=args.tune, steps=args.steps, lr=args.lr,
                    compile=args.compile, episode_batch=args.episode_batch,
                    image_size=args.image_size,
                    methods=tuple(m for m in args.methods.split(",") if m), device=args.device)
    cfg.validate()
    methods = cfg.trained_methods
    device = resolve_device(cfg.device)
    # bf16 autocast on a GPU, as bench run (not with --float64)
    autocast = torch.bfloat16 if device.type == "cuda" and not args.float64 else None
    dtype = torch.float64 if args.float64 else torch.float32

    data = create_dataset(cfg.dataset, cfg.split, cfg.data_root)
    cfg.episodes_dir = args.episodes_dir
    all_episodes, episode_file, created, _, _ = episodes_for(cfg, data)
    n = min(max(args.episodes, args.reference_episodes), len(all_episodes))
    n_ref = min(args.reference_episodes, n)
    episodes = all_episodes.subset(range(n))
    model = create_backbone(cfg.backbone, weights=cfg.weights).to(dtype)
    data_cfg = backbone_data_config(model)
    size = cfg.image_size or data.meta.get("image_size") or data_cfg["input_size"][-1]
    bank_kw = dict(n_views=cfg.bank_views, size=size, mean=data_cfg["mean"], std=data_cfg["std"],
                   interpolation=data_cfg.get("interpolation", "bicubic"), seed=cfg.seed,
                   dtype=dtype)

    print(f"fewshot-bench speed: {cfg.dataset}/{cfg.split}, {cfg.backbone} "
          f"({model.weights_source['source']}), {size} px, tune={cfg.tune}, "
          f"{cfg.ways}-way {cfg.shots}-shot {cfg.queries} queries, views {cfg.views}, "
          f"bank views {cfg.bank_views}, steps {cfg.steps}, {cfg.optimizer} lr {cfg.lr}, "
          f"methods {','.join(methods)}{', float64' if args.float64 else ''}")
    print(f"episodes: first {n} of {episode_file}{' (new)' if created else ''}; "
          f"reference loop on the first {n_ref}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, device {device}, "
          f"load average {os.getloadavg()[0]:.1f}")

    # -- (b) the engine: bank once, then groups of episodes --------------------------------
    split = split_backbone(model, cfg.tune)
    used = np.unique(np.concatenate([episodes.support.ravel(), episodes.query.ravel()]))
    row_of = np.full(len(data), -1, dtype=np.int64)
    row_of[used] = np.arange(len(used))
    t0 = time.perf_counter()
    bank = build_bank(split.lower, data.images, used, device=device, autocast_dtype=autocast,
                      progress=False, **bank_kw)
    engine = EpisodeFinetuner(split, bank, ways=cfg.ways, shots=cfg.shots, device=device,
                              autocast_dtype=autocast, compile=cfg.compile)
    bank_seconds = time.perf_counter() - t0
    rss_bank = peak_rss_mib()
    support = torch.from_numpy(row_of[episodes.support]).to(device)
    query = torch.from_numpy(row_of[episodes.query]).to(device)
    batch = episode_batch_size(cfg, bank)
    engine_acc: dict[str, np.ndarray] = {}
    engine_loss: dict[str, np.ndarray] = {}
    engine_seconds = 0.0
    for method in methods:
        mcfg = method_config(cfg, method)
        accs, losses = [], []
        for start in range(0, n, batch):
            ids = np.arange(start, min(start + batch, n))
            t = time.perf_counter()
            r = engine.finetune(support[ids], query[ids], ids, cfg.seed, mcfg)
            engine_seconds += time.perf_counter() - t
            accs.append(r.accuracy)
            losses.append(r.loss_after)
        engine_acc[method], engine_loss[method] = np.concatenate(accs), np.concatenate(losses)
    rss_engine = peak_rss_mib()
    engine_eps = n * len(methods) / engine_seconds
    bank_per_image = bank_seconds / len(used)
    bank_mib = bank.numel() * 4 / 2**20
    step_kind = _step_kind(cfg, engine)
    del engine, bank

    # -- (a) the reference loop on the first n_ref episodes --------------------------------
    ref_seconds = prep_seconds = 0.0
    max_acc_diff, max_loss_rel = 0.0, 0.0
    n_query = cfg.ways * cfg.queries
    ref_rows = []
    for e in range(n_ref):
        t = time.perf_counter()
        ids = np.unique(np.concatenate([episodes.support[e], episodes.query[e]]))
        local = {int(i): k for k, i in enumerate(ids)}
        x = normalised_views(data.images, ids, **bank_kw).to(device)
        s_rows = [local[int(i)] for i in episodes.support[e]]
        q_rows = [local[int(i)] for i in episodes.query[e]]
        prep_seconds += time.perf_counter() - t
        for method in methods:
            t = time.perf_counter()
            ref = reference_finetune_episode(model, cfg.tune, x, s_rows, q_rows, e, cfg.seed,
                                             method_config(cfg, method), cfg.ways, cfg.shots,
                                             device=device)
            ref_seconds += time.perf_counter() - t
            a_eng, a_ref = engine_acc[method][e], ref["accuracy"]
            diff = abs(round(a_eng * n_query) - round(a_ref * n_query)) / n_query
            max_acc_diff = max(max_acc_diff, diff)
            l_eng, l_ref = engine_loss[method][e], ref["loss_after"]
            max_loss_rel = max(max_loss_rel, abs(l_eng - l_ref) / max(abs(l_ref), 1e-12))
            ref_rows.append((e, method, a_ref, a_eng, l_ref, l_eng))
        del x
    ref_eps = n_ref * len(methods) / ref_seconds
    rss_total = peak_rss_mib()

    # -- report --------------------------------------------------------------------------
    full_used = np.unique(np.concatenate([all_episodes.support.ravel(), all_episodes.query.ravel()]))
    full_bank = bank_per_image * len(full_used)
    full_train = cfg.episodes * len(methods) / engine_eps
    full_ref = cfg.episodes * len(methods) / ref_eps
    print()
    print("episode  method   reference acc  engine acc  reference loss  engine loss")
    for e, method, a_ref, a_eng, l_ref, l_eng in ref_rows:
        print(f"{e:7d}  {method:7s}  {a_ref:13.4f}  {a_eng:10.4f}  {l_ref:14.6f}  {l_eng:11.6f}")
    print()
    print(f"reference loop : {n_ref} episodes x {len(methods)} methods in {ref_seconds:8.1f} s "
          f"= {ref_eps:8.3f} episodes/s  (+{prep_seconds:.1f} s building its augmented images)")
    print(f"engine         : {n} episodes x {len(methods)} methods in {engine_seconds:8.1f} s "
          f"= {engine_eps:8.3f} episodes/s  (episode groups of {batch}; training step "
          f"{step_kind})")
    print(f"engine bank    : {bank_seconds:.1f} s for {len(used)} images x {cfg.bank_views} views "
          f"({1000 * bank_per_image:.1f} ms/image, clean embeddings included)")
    print(f"speedup        : {engine_eps / ref_eps:.1f}x episodes/s (training only, bank aside)")
    print(f"agreement      : max |accuracy difference| {max_acc_diff:.4g} "
          f"(on {n_ref} x {len(methods)} shared episodes), max relative loss_after difference "
          f"{max_loss_rel:.2g}")
    print(f"peak RSS       : {rss_bank:.0f} MiB after the bank ({bank_mib:.0f} MiB "
          f"of it the bank), {rss_engine:.0f} MiB after the engine, {rss_total:.0f} MiB at the end")
    print(f"projected full default run ({cfg.episodes} episodes x {len(methods)} methods, "
          f"{len(full_used)} images in the bank):")
    print(f"  engine       : {full_bank:.0f} s bank + {full_train:.0f} s training "
          f"= {(full_bank + full_train) / 60:.1f} min")
    print(f"  reference    : {full_ref / 60:.1f} min ({full_ref / 3600:.1f} h)")
    print(f"speedup={engine_eps / ref_eps:.1f} max_acc_diff={max_acc_diff:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
