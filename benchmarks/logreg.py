"""The batched torch logistic-regression solver against scikit-learn, on real episodes.

In one process, on the same stored episodes and the same frozen support and query features
(`EpisodeFinetuner.logreg_inputs`, as `bench run --methods logreg` uses them), times

  (a) the reference: scikit-learn's LogisticRegression(C, lbfgs, max_iter=1000), one fit
      per episode, as the SCHaNe authors' `fewshot_eval` calls it;
  (b) `logreg.fit_predict(..., solver="torch")`: every episode at once (logreg.py);

and counts the query predictions on which they agree (the issue's bar: >= 99% over 600
episodes; the solver reaches the optimum, scikit-learn stops at its tolerance).

    .venv/bin/python benchmarks/logreg.py                 # 5-way 1-shot, 600 episodes
    .venv/bin/python benchmarks/logreg.py --shots 5

The last line is ``speedup=<sklearn seconds / torch seconds> agreement=<fraction>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from fewshot_bench import logreg
from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.config import RunConfig
from fewshot_bench.data import create_dataset
from fewshot_bench.runner import build_engine, episodes_for
from fewshot_bench.split import split_backbone


def main(argv=None) -> int:
    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shots", type=int, default=d.shots)
    p.add_argument("--episodes", type=int, default=d.episodes)
    p.add_argument("--views", type=int, default=d.views)
    p.add_argument("--C", type=float, default=d.logreg_c)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--episodes-dir", default=d.episodes_dir)
    args = p.parse_args(argv)
    cfg = RunConfig(shots=args.shots, episodes=args.episodes, views=args.views,
                    image_size=args.image_size, episodes_dir=args.episodes_dir,
                    methods=("logreg",), device="cpu").validate()
    data = create_dataset(cfg.dataset, cfg.split, cfg.data_root)
    episodes, episode_file, created, _, _ = episodes_for(cfg, data)
    model = create_backbone(cfg.backbone)
    data_cfg = backbone_data_config(model)
    size = cfg.image_size or data.meta.get("image_size") or data_cfg["input_size"][-1]
    split = split_backbone(model, cfg.tune)
    engine, support, query = build_engine(cfg, data, episodes, split, data_cfg, size,
                                          torch.device("cpu"), progress=False)
    xs, ys, w, xq = engine.logreg_inputs(support, query, cfg.views)
    print(f"fewshot-bench logreg: {cfg.dataset}/{cfg.split}, {cfg.backbone}, {size} px, "
          f"{cfg.ways}-way {cfg.shots}-shot, {len(episodes)} episodes of {episode_file}"
          f"{' (new)' if created else ''}; support {xs.shape[1]} rows x {xs.shape[2]} "
          f"features (clean + {cfg.views} views), C {args.C}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")

    t = time.perf_counter()
    ours = logreg.fit_predict(xs, ys, xq, cfg.ways, C=args.C, solver="torch")
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = logreg.fit_predict(xs, ys, xq, cfg.ways, C=args.C, solver="sklearn")
    t_ref = time.perf_counter() - t

    truth = torch.from_numpy(np.asarray(episodes.query_labels)).expand_as(ours)
    agree = float((ours == ref).double().mean())
    print(f"scikit-learn (reference): {t_ref:7.2f} s, accuracy {100 * float((ref == truth).double().mean()):.2f} %")
    print(f"torch (batched):          {t_ours:7.2f} s, accuracy {100 * float((ours == truth).double().mean()):.2f} %")
    print(f"queries predicted alike: {agree:.4%} of {ours.numel()}; episodes with any "
          f"difference: {int((ours != ref).any(1).sum())} of {len(ours)}")
    print(f"speedup={t_ref / t_ours:.1f} agreement={agree:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
