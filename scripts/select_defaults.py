"""Choose the default fine-tuning protocol on VALIDATION episodes (never test).

A thin wrapper over `bench sweep` (fewshot_bench.sweep.run_sweep): CE and SCHaNe (for
information) over a grid of learning rates and step counts on the 600 committed leak-free
emoji/val episodes with the default backbone and tune mode, ProtoNet once as the no-training reference. Selection rule
(recorded in the README): the most accurate CE setting on validation (ties: the first in
grid order); SCHaNe then uses the same shared hyperparameters, so the choice does not
favour either method.

    .venv/bin/python scripts/select_defaults.py --shots 1

The same as `bench sweep --split val --shots 1 --episodes 600 --param lr=0.001,0.003,0.01,0.03
--param steps=25,50 --methods protonet,ce,schane --out results/select-defaults-1shot`, plus
the CE choice; `bench sweep --select-on val --target ce` would also evaluate the choice on
test episodes.
"""

from __future__ import annotations

import click

from fewshot_bench.config import RunConfig
from fewshot_bench.sweep import choose, describe, parse_params, run_sweep


@click.command()
@click.option("--shots", type=int, default=1)
@click.option("--episodes", type=int, default=600)
@click.option("--tune", default="norm")
@click.option("--lrs", default="0.001,0.003,0.01,0.03")
@click.option("--steps", "steps_list", default="25,50")
@click.option("--methods", default="protonet,ce,schane")
@click.option("--episodes-dir", default="episodes", show_default=True,
              help="Where episode files are read or written (other counts than the committed "
                   "600 make new files: point this elsewhere).")
@click.option("--out", default=None,
              help="Sweep folder [default: results/select-defaults-<K>shot].")
def main(shots: int, episodes: int, tune: str, lrs: str, steps_list: str, methods: str,
         episodes_dir: str, out: str | None) -> None:
    cfg = RunConfig(split="val", shots=shots, episodes=episodes, tune=tune,
                    episodes_dir=episodes_dir,
                    methods=tuple(m.strip() for m in methods.split(",") if m.strip()))
    grid = parse_params([f"lr={lrs}", f"steps={steps_list}"])
    result = run_sweep(cfg, grid, out or f"results/select-defaults-{shots}shot",
                       echo=lambda m: click.echo(m, err=True))
    click.echo(result.text)
    ce = result.table[(result.table["method"] == "ce") & (result.table["point"] != "base")]
    if len(ce):
        best = ce.iloc[choose(list(ce["mean"]))]
        click.echo(f"\nmost accurate CE on val: {describe({k: best[k] for k in grid})} "
                   f"({best['accuracy']} %)")


if __name__ == "__main__":
    main()
