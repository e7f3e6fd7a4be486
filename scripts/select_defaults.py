"""Choose the default fine-tuning protocol on VALIDATION episodes (never test).

Runs CE (and SCHaNe, for information) over a small grid of learning rates and step counts
on emoji/val episodes with the default backbone and tune mode, next to the no-training
ProtoNet reference, and prints one table row per setting. Selection rule (applied by hand,
recorded in the README): the most accurate CE setting on validation; SCHaNe then uses the
same shared hyperparameters, so the choice does not favour either method.

    .venv/bin/python scripts/select_defaults.py --shots 1 --episodes 300
"""

from __future__ import annotations

import itertools
import time

import click
import numpy as np
import torch

from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.bank import build_bank
from fewshot_bench.config import RunConfig
from fewshot_bench.data import create_dataset
from fewshot_bench.episodes import EpisodeSpec, sample_episodes
from fewshot_bench.finetune import EpisodeFinetuner
from fewshot_bench.runner import method_config


@click.command()
@click.option("--shots", type=int, default=1)
@click.option("--episodes", type=int, default=300)
@click.option("--tune", default="norm")
@click.option("--lrs", default="0.001,0.003,0.01,0.03")
@click.option("--steps", "steps_list", default="25,50")
@click.option("--methods", default="ce,schane")
def main(shots: int, episodes: int, tune: str, lrs: str, steps_list: str, methods: str) -> None:
    base = RunConfig(split="val", shots=shots, episodes=episodes, tune=tune)
    data = create_dataset(base.dataset, "val")
    es = sample_episodes(data.labels, EpisodeSpec(base.dataset, "val", base.ways, shots,
                                                  base.queries, episodes, base.seed),
                         data.fingerprint())
    model = create_backbone(base.backbone)
    dc = backbone_data_config(model)
    from fewshot_bench.split import split_backbone
    split = split_backbone(model, tune)
    bank = build_bank(split.lower, data.images, np.arange(len(data)), n_views=base.bank_views,
                      size=data.meta["image_size"], mean=dc["mean"], std=dc["std"],
                      seed=base.seed, progress=False)
    engine = EpisodeFinetuner(split, bank, ways=base.ways, shots=shots)
    s, q = torch.from_numpy(es.support), torch.from_numpy(es.query)
    proto = engine.protonet(s, q)
    print(f"emoji/val {base.ways}-way {shots}-shot, {episodes} episodes, tune={tune}")
    print(f"protonet: {100 * proto.mean():.2f}")
    for lr, steps, method in itertools.product(
            [float(x) for x in lrs.split(",")], [int(x) for x in steps_list.split(",")],
            methods.split(",")):
        cfg = method_config(RunConfig(lr=lr, steps=steps, tune=tune), method)
        t0 = time.perf_counter()
        acc = np.concatenate([
            engine.finetune(s[i:i + 100], q[i:i + 100], np.arange(i, min(i + 100, episodes)),
                            base.seed, cfg).accuracy
            for i in range(0, episodes, 100)])
        diff = 100 * (acc - proto)
        print(f"{method:7s} lr={lr:<6g} steps={steps:<3d} acc={100 * np.nanmean(acc):.2f} "
              f"vs protonet {np.nanmean(diff):+.2f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
