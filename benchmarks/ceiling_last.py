"""How close the `--tune last` engine is to the plain network on the same work.

One training step of a group of G episodes runs the upper network (the last stage and what
follows) forward and backward on G x ways x shots x views bank features. This script times,
in one process and on the same bank-shaped inputs:

- the engine (`EpisodeFinetuner.finetune`, G episodes, one trained method, all its steps and
  the query evaluation), per episode;
- the ceiling: the *plain* upper network (one shared copy, no vmap, no per-episode weights,
  no optimiser) forward + backward on the same images per step, times the steps, plus a
  forward pass on the queries. No per-episode engine can beat this on the CPU, because it
  has to do at least that arithmetic.

The last line is `engine_vs_ceiling=<engine seconds / ceiling seconds>`; a value near 1
means batching has nothing left to win and only fewer steps or a faster machine help.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from fewshot_bench.backbones import create_backbone
from fewshot_bench.config import RunConfig
from fewshot_bench.finetune import EpisodeFinetuner
from fewshot_bench.runner import method_config
from fewshot_bench.split import split_backbone


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--group", type=int, default=32, help="episodes trained together")
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="[default: --tune last's]")
    p.add_argument("--method", default="ce")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(tune="last", shots=args.shots, steps=args.steps, device="cpu")
    cfg.validate()
    torch.manual_seed(0)
    split = split_backbone(create_backbone(cfg.backbone).eval(), "last")
    with torch.no_grad():
        feat = split.lower(torch.randn(1, 3, args.image_size, args.image_size))[0]
    g, ways, per = args.group, cfg.ways, cfg.shots + cfg.queries
    # a bank: one row per image, `bank_views` augmented views each (as bank.build_bank)
    bank = torch.randn(g * ways * per, cfg.bank_views, *feat.shape)
    ids = np.arange(g * ways * per).reshape(g, ways, per)
    support = torch.from_numpy(ids[:, :, :cfg.shots].reshape(g, -1))
    query = torch.from_numpy(ids[:, :, cfg.shots:].reshape(g, -1))
    engine = EpisodeFinetuner(split, bank, ways=ways, shots=cfg.shots, device="cpu")
    mcfg = method_config(cfg, args.method)
    engine.finetune(support[:2], query[:2], np.arange(2), 0, mcfg)  # warm-up
    t = time.perf_counter()
    engine.finetune(support, query, np.arange(g), 0, mcfg)
    engine_s = time.perf_counter() - t

    upper = split.upper
    x_train = bank[: g * ways * cfg.shots * cfg.views, 0].clone()
    x_query = bank[: g * ways * cfg.queries, 0].clone()
    upper(x_train[:8]).sum().backward()  # warm-up
    t = time.perf_counter()
    for _ in range(cfg.steps):
        upper.zero_grad(set_to_none=True)
        upper(x_train).sum().backward()
    with torch.no_grad():
        upper(x_query)
    ceiling_s = time.perf_counter() - t
    print(f"--tune last, {cfg.backbone}, {args.image_size} px (bank features "
          f"{tuple(feat.shape)}), {ways}-way {cfg.shots}-shot, {cfg.views} views, "
          f"{cfg.steps} steps, group of {g} episodes, {args.method}, "
          f"{torch.get_num_threads()} threads")
    print(f"engine : {engine_s:7.2f} s = {engine_s / g:.3f} s per episode")
    print(f"ceiling: {ceiling_s:7.2f} s = {ceiling_s / g:.3f} s per episode (plain upper "
          f"network, {len(x_train)} images forward+backward per step, {len(x_query)} queries)")
    print(f"engine_vs_ceiling={engine_s / ceiling_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
