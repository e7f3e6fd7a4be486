"""Choose the default fine-tuning protocol on VALIDATION episodes (never test).

A thin wrapper over `bench sweep` (fewshot_bench.sweep.run_sweep): CE and SCHaNe (for
information) over a grid of learning rates and step counts on the 600 committed leak-free
emoji/val episodes with the default backbone and tune mode, ProtoNet once as the no-training reference. Selection rule
(recorded in docs/protocol.md): the most accurate CE setting on validation (ties: the first in
grid order); SCHaNe then uses the same shared hyperparameters, so the choice does not
favour either method.

    .venv/bin/python scripts/select_defaults.py --shots 1

The same as `bench sweep --split val --shots 1 --episodes 600 --param lr=0.001,0.003,0.01,0.03
--param steps=25,50 --methods protonet,ce,schane --out results/select-defaults-1shot`, plus
the CE choice; `bench sweep --select-on val --target ce` would also evaluate the choice on
test episodes.

`--curves` gets the same table for a fraction of the cost: one `bench run` per lr with
--steps at the largest count and --eval-steps at the others (an episode's accuracy after s
of its steps is what a run with --steps s gives: the same view schedule prefix, no lr
schedule; tests/test_runner_eval_steps.py checks it). For the costly modes (last, full):

    .venv/bin/python scripts/select_defaults.py --tune last --lrs 0.0001,0.0003 --steps 25,50 --curves
"""

from __future__ import annotations

import click

from dataclasses import replace
from pathlib import Path

import pandas as pd

from fewshot_bench.analysis import steps_summary
from fewshot_bench.config import RunConfig
from fewshot_bench.runner import run
from fewshot_bench.sweep import choose, describe, parse_params, run_sweep


def curves(cfg: RunConfig, lrs: list[float], steps: list[int], out: Path) -> pd.DataFrame:
    """One run per lr (steps = the largest count, eval_steps = all of them) into out/lr=X;
    the table: lr, steps, method, n, mean, ci95 (percent), in grid order (lr, then steps)."""
    tables = []
    for lr in lrs:
        point = replace(cfg, lr=lr, steps=max(steps), eval_steps=tuple(steps),
                        out=str(out / f"lr={lr:g}")).validate()
        result = run(point, echo=lambda m: click.echo(m, err=True))
        click.echo(result.text, err=True)
        tables.append(steps_summary(result.rows).assign(lr=lr))
    table = pd.concat(tables, ignore_index=True)
    return table[["lr", "steps", "method", "n", "mean", "ci95"]]


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
@click.option("--curves", "curves_only", is_flag=True,
              help="One run per lr with --eval-steps instead of one run per (lr, steps).")
@click.option("--head-lr-factor", type=float, default=None,
              help="The head's lr over the backbone's, for the whole grid [default: the "
                   "mode's]; the default folder then ends in -head<factor>.")
@click.option("--optimizer", default=None,
              help="adam, adamw or sgd for the whole grid [default: adam, in every mode]; the "
                   "default folder then ends in -<optimizer>.")
@click.option("--out", default=None,
              help="Sweep folder [default: results/select-defaults-<tune>-<K>shot].")
def main(shots: int, episodes: int, tune: str, lrs: str, steps_list: str, methods: str,
         episodes_dir: str, curves_only: bool, head_lr_factor: float | None,
         optimizer: str | None, out: str | None) -> None:
    extra = {"optimizer": optimizer} if optimizer else {}
    cfg = RunConfig(split="val", shots=shots, episodes=episodes, tune=tune,
                    episodes_dir=episodes_dir, head_lr_factor=head_lr_factor, **extra,
                    methods=tuple(m.strip() for m in methods.split(",") if m.strip()))
    grid = parse_params([f"lr={lrs}", f"steps={steps_list}"])
    out = out or (f"results/select-defaults-{tune}-{shots}shot"
                  + (f"-head{head_lr_factor:g}" if head_lr_factor is not None else "")
                  + (f"-{optimizer}" if optimizer else ""))
    if curves_only:
        table = curves(cfg, grid["lr"], grid["steps"], Path(out))
        wide = table.pivot_table(index=["lr", "method"], columns="steps", values="mean",
                                 sort=False)
        click.echo(wide.round(2).to_string())
        ce = table[table["method"] == "ce"].reset_index(drop=True)
        if len(ce):
            best = ce.iloc[choose(list(ce["mean"]))]
            click.echo(f"\nmost accurate CE on val: lr={best['lr']:g}, steps={best['steps']} "
                       f"({best['mean']:.2f} +- {best['ci95']:.2f} %)")
        return
    result = run_sweep(cfg, grid, out,
                       echo=lambda m: click.echo(m, err=True))
    click.echo(result.text)
    ce = result.table[(result.table["method"] == "ce") & (result.table["point"] != "base")]
    if len(ce):
        best = ce.iloc[choose(list(ce["mean"]))]
        click.echo(f"\nmost accurate CE on val: {describe({k: best[k] for k in grid})} "
                   f"({best['accuracy']} %)")


if __name__ == "__main__":
    main()
