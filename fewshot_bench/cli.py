"""`bench`: the command line. A thin layer over functions a notebook can call too."""

from __future__ import annotations

import errno
import sys

import click
from click.core import ParameterSource

from .config import (LOGREG_SOLVERS, METHODS, OPTIMIZERS, TUNE_MODES, RunConfig,
                     describe_tune_default)
from .errors import BenchError, RunFailed
from .fileio import disk_full_message

_DEFAULTS = RunConfig()
_SPLIT_RATIOS_HELP = ("folder:PATH without PATH/split.json: the shares of its classes in train, "
                      "val and test of the automatic class split (default 0.6:0.2:0.2); 0:0:1 "
                      "puts every class in test, for a folder used only for evaluation.")


def _methods(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in value.split(",") if m.strip())


class _Summary:
    """`bench --help` lists each command with the whole first sentence of its help; click
    would cut it at the listing's width with "..." (the row wraps instead)."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=10_000)


class BenchCommand(_Summary, click.Command):
    """A `bench` command (see _Summary)."""


class BenchSubgroup(_Summary, click.Group):
    """A group of `bench` commands such as `bench data` (see _Summary)."""

    command_class = BenchCommand


class BenchGroup(_Summary, click.Group):
    """Turns BenchError (and a full disk) into a one-paragraph message and exit status 2,
    no traceback; a subcommand's usage error (unknown option, missing file) reads the same
    way."""

    command_class = BenchCommand
    group_class = BenchSubgroup

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:  # `bench data`: its help, as click shows it
            raise
        except click.UsageError as exc:  # raised while parsing a subcommand's arguments
            where = exc.ctx.command_path if exc.ctx else "bench"
            click.echo(f"error: {exc.format_message()} (`{where} -h` for help)", err=True)
            ctx.exit(2)
        except (BenchError, RunFailed) as exc:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, BenchError) else 1)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or ctx.meta.get("debug"):
                raise
            click.echo(f"error: {disk_full_message(exc)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            if ctx.invoked_subcommand == "finetune":
                click.echo("interrupted: no weights were saved; the same command starts the "
                           "fine-tuning over.", err=True)
            else:
                click.echo("interrupted: finished results are kept; run the same command "
                           "again to resume.", err=True)
            ctx.exit(130)


_TUNE_LR = describe_tune_default("lr")
_TUNE_STEPS = describe_tune_default("steps")
_TUNE_HEAD = describe_tune_default("head_lr_factor")


def _set_debug(ctx: click.Context, _param, value: bool) -> None:
    if value:  # ctx.meta is shared by the group's and the subcommands' contexts
        ctx.meta["debug"] = True


_DEBUG_HELP = "Show full tracebacks for errors."
# `--debug` after a subcommand too (`bench run ... --debug`); added to every command below
_DEBUG = click.Option(["--debug"], is_flag=True, expose_value=False, callback=_set_debug,
                      help=_DEBUG_HELP)


# -h too; subcommands inherit both; lines up to 100 columns where the terminal is that wide
@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, help=_DEBUG_HELP)
@click.version_option(package_name="fewshot-bench")
def main() -> None:
    """Paired few-shot fine-tuning benchmark: SCHaNe vs cross-entropy."""


@main.command()
@click.option("--dataset", default=_DEFAULTS.dataset, show_default=True,
              help="emoji, cifar-fs, fc100, mini-imagenet, tiered-imagenet, cub, omniglot or "
                   "folder:PATH (see `bench data list`).")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder holding the data sets [default: $FEWSHOT_DATA, else ~/data].")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=_DEFAULTS.split,
              show_default=True, help="Class split the episodes come from.")
@click.option("--split-ratios", default=None, metavar="TRAIN:VAL:TEST",
              help=_SPLIT_RATIOS_HELP)
@click.option("--ways", type=int, default=_DEFAULTS.ways, show_default=True,
              help="Classes per episode (N of N-way).")
@click.option("--shots", type=int, default=_DEFAULTS.shots, show_default=True,
              help="Labelled support images per class (K of K-shot).")
@click.option("--shots-dist", default=None, metavar="DIST",
              help="Imbalanced episodes: support images per class drawn from uniform:LO-HI or "
                   "zipf:A:LO-HI (replaces --shots; the summary adds accuracy per frequency band).")
@click.option("--queries", type=int, default=_DEFAULTS.queries, show_default=True,
              help="Query images per class.")
@click.option("--episodes", type=int, default=_DEFAULTS.episodes, show_default=True,
              help="Episodes sampled (and stored) for the run; 600 to 2000 is the usual protocol.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds the episodes, the augmentations and the view schedule.")
@click.option("--groups", default=_DEFAULTS.groups, show_default=True, metavar="auto|none|FILE",
              help="Images that are copies of one another never face each other across support "
                   "and query: auto = the data set's own groups (emoji: code point), none, or a "
                   "CSV from `bench data audit --groups-out` (merged with the data set's own).")
@click.option("--backbone", default=_DEFAULTS.backbone, show_default=True, help="timm model name.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Local timm-format weight file for --backbone.")
@click.option("--image-size", type=int, default=None,
              help="Input size in pixels [default: the data set's, else the backbone's].")
@click.option("--methods", default=",".join(_DEFAULTS.methods), show_default=True,
              callback=_methods, help=f"Comma list of {', '.join(METHODS)}.")
@click.option("--lambda", "lam", type=float, default=_DEFAULTS.lam, show_default=True,
              help="SCHaNe weight: loss = (1 - lambda) CE + lambda SCHaNe.")
@click.option("--tau", type=float, default=_DEFAULTS.tau, show_default=True, help="Temperature.")
@click.option("--beta", type=float, default=_DEFAULTS.beta, show_default=True,
              help="Hard-negative concentration (0: uniform weights).")
@click.option("--detach-weights", is_flag=True, help="Stop gradient through hard-negative weights.")
@click.option("--views", type=int, default=_DEFAULTS.views, show_default=True,
              help="Augmented views of each support image per step.")
@click.option("--bank-views", type=int, default=_DEFAULTS.bank_views, show_default=True,
              help="Augmented views stored per image (view 0 is the clean image).")
@click.option("--steps", type=int, default=None,
              help="Fine-tuning steps per episode [default: per --tune mode, "
                   f"{_TUNE_STEPS}].")
@click.option("--lr", type=float, default=None,
              help=f"Learning rate [default: per --tune mode, {_TUNE_LR}].")
@click.option("--head-lr-factor", type=float, default=None,
              help="The cosine head's lr is this x --lr where backbone tensors train with it "
                   f"(norm, last, full) [default: per --tune mode, {_TUNE_HEAD}].")
@click.option("--eval-steps", default="",
              help="Also record each trained episode's query accuracy after these many steps "
                   "(comma list, each <= --steps): a learning curve from one run.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_DEFAULTS.optimizer,
              show_default=True, help="Optimiser of the per-episode fine-tuning.")
@click.option("--weight-decay", type=float, default=_DEFAULTS.weight_decay, show_default=True,
              help="Weight decay of the optimiser.")
@click.option("--logit-scale", type=float, default=_DEFAULTS.logit_scale, show_default=True,
              help="Scale of the cosine head's logits.")
@click.option("--logreg-c", type=float, default=_DEFAULTS.logreg_c, show_default=True,
              help="logreg: inverse L2 strength (scikit-learn's C).")
@click.option("--logreg-solver", type=click.Choice(LOGREG_SOLVERS), default=_DEFAULTS.logreg_solver,
              show_default=True, help="logreg: batched torch solver or scikit-learn (reference).")
@click.option("--tune", type=click.Choice(TUNE_MODES), default=_DEFAULTS.tune, show_default=True,
              help="What trains per episode: head, norm (final norm's scale/shift), last "
                   "(last stage), full (whole backbone).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Where to compute: auto takes a GPU when there is one.")
@click.option("--episodes-dir", type=click.Path(), default="episodes", show_default=True,
              help="Where episode files are stored and reused.")
@click.option("--episode-batch", type=int, default=None,
              help="Episodes fine-tuned together [default: from memory]; never changes results.")
@click.option("--compile/--no-compile", default=_DEFAULTS.compile, show_default=True,
              help="torch.compile the --tune norm training step where the run is large enough "
                   "to repay it (a few seconds per shape; the same results to float precision; "
                   "eager with a warning if compiling fails).")
@click.option("--embeddings", type=int, default=0, show_default=True,
              help="Save query embeddings of the first this-many episodes (for bench report).")
@click.option("--out", type=click.Path(), default=None,
              help="Results folder [default: results/<run-id>]; a stopped run there resumes.")
@click.option("--fail-fast", is_flag=True,
              help="Stop at the first episode whose loss turns NaN/inf instead of recording it.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--config", type=click.Path(exists=True), default=None, metavar="FILE",
              help="Settings from a JSON or YAML file of option names and values, or from a "
                   "run folder's run.json (reproduces that run); flags given here override it.")
@click.pass_context
def run(ctx: click.Context, no_progress: bool, **options) -> None:
    """Fine-tune per episode with each method on the same stored episodes and compare."""
    options = _with_config_file(ctx, options)
    cfg = RunConfig(**options).validate()  # refuse bad values before the heavy imports
    from .runner import run as run_benchmark

    result = run_benchmark(cfg, progress=not no_progress, echo=lambda m: click.echo(m, err=True))
    if result.text:  # empty on torchrun ranks other than 0, which print nothing
        click.echo(result.text)


def _with_config_file(ctx: click.Context, options: dict) -> dict:
    """`options` with --config FILE's settings in place of the defaults: only the flags
    given on the command line (or by environment) win over the file."""
    path = options.pop("config", None)
    if path is None:
        return options
    from .configfile import read_config_file

    given = {k: v for k, v in options.items() if ctx.get_parameter_source(k)
             not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    return {**options, **read_config_file(path), **given}


@main.command("sweep")
@click.option("--param", "params", multiple=True, required=True, metavar="NAME=V1,V2,...",
              help="A swept hyperparameter and its values (repeatable; the grid is every "
                   "combination): lambda, tau, beta, lr, steps, views, logit_scale, weight_decay, "
                   "head_lr_factor.")
@click.option("--out", type=click.Path(), required=True,
              help="Sweep folder (rerun the same command to resume).")
@click.option("--select-on", type=click.Choice(["val"]), default=None,
              help="Choose the grid point on validation episodes first, then run only it (and "
                   "the methods the grid does not change) on --split.")
@click.option("--target", default="schane", show_default=True,
              help="With --select-on: the method whose mean accuracy chooses the grid point.")
@click.option("--no-figures", is_flag=True, help="Tables only in the sweep's report (faster).")
def sweep(params: tuple[str, ...], out: str, select_on: str | None, target: str,
          no_figures: bool, **options) -> None:
    """Run a hyperparameter grid on one episode file; every `bench run` option applies.

    Methods the swept parameters do not change run once (runs/base); the others once per
    grid point. Writes results.csv/.md (accuracy and the paired difference vs CE per grid
    point and method) and report/ (`bench report` over the runs, sweep figures included)."""
    from .sweep import config_options, parse_params, run_sweep

    grid = parse_params(params)
    cfg = RunConfig(**config_options(options))
    result = run_sweep(cfg, grid, out, select_on=select_on, target=target,
                       progress=not options.get("no_progress"), figures=not no_figures,
                       echo=lambda m: click.echo(m, err=True))
    click.echo(result.text)


# every `bench run` option, before the sweep's own (run's --out is the sweep's folder here)
sweep.params[:0] = [p for p in run.params if p.name not in ("out", "config")]


@main.command("baseline")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Baseline file to write, e.g. results/baselines/NAME.json (overwritten).")
def baseline_cmd(run_dir: str, out: str) -> None:
    """Store the finished run RUN_DIR as an accuracy baseline for `bench check`."""
    from .baseline import create_baseline

    click.echo(create_baseline(run_dir, out).text)


@main.command("transfer")
@click.option("--methods", default="protonet,logreg", show_default=True, callback=_methods,
              help="Methods scored on each network: the frozen-backbone protonet, logreg "
                   "(the authors' evaluation), linear-probe, and optionally per-episode ones.")
@click.option("--epochs", type=int, default=None,
              help="Epochs of each fine-tune on the train split [default: 5].")
@click.option("--finetune-steps", type=int, default=None,
              help="Optimiser steps of each fine-tune, instead of --epochs.")
@click.option("--batch-size", type=int, default=32, show_default=True,
              help="Images per fine-tuning step (each as --views views, at least 2).")
@click.option("--finetune-lr", type=float, default=1e-4, show_default=True,
              help="AdamW learning rate of the backbone in the fine-tunes (the head gets 10x).")
@click.option("--out", type=click.Path(), default=None,
              help="Transfer folder; rerun to resume, or with other evaluation options to add "
                   "an evaluation [default: results/transfer/<time>-<dataset>].")
def transfer_cmd(epochs: int | None, finetune_steps: int | None, batch_size: int,
                 finetune_lr: float, out: str | None, no_progress: bool, **options) -> None:
    """The paper's protocol: fine-tune on train with CE and SCHaNe, compare the networks.

    Fine-tunes the backbone on the train split with CE and with SCHaNe (same batches and
    views), scores the same stored episodes of --split with --methods on the pretrained and
    both fine-tuned networks, and writes a report whose paired table compares the networks
    episode by episode. Every `bench run` option applies to the evaluation; --lambda, --tau,
    --beta, --views, --image-size and --seed also to the fine-tunes."""
    from .sweep import config_options
    from .transfer import TransferConfig, run_transfer

    cfg = TransferConfig(run=RunConfig(**config_options(options)), epochs=epochs,
                         finetune_steps=finetune_steps, batch_size=batch_size,
                         finetune_lr=finetune_lr, out=out).validate()
    result = run_transfer(cfg, progress=not no_progress, echo=lambda m: click.echo(m, err=True))
    click.echo(result.text)


# every `bench run` option but its --methods and --out (transfer has its own)
transfer_cmd.params[:0] = [p for p in run.params if p.name not in ("out", "methods", "config")]


# `bench finetune`: options default to None = FullFinetuneConfig's default (fulltune imports
# torch, so its defaults are not read here; the help states them).
@main.command("finetune")
@click.option("--dataset", default=None, help="Data set, as for bench run [default: emoji].")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder holding the data sets [default: $FEWSHOT_DATA, else ~/data].")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="The split whose images are trained on (and held out) [default: train].")
@click.option("--split-ratios", default=None, metavar="TRAIN:VAL:TEST",
              help=_SPLIT_RATIOS_HELP)
@click.option("--method", default=None, help="ce, schane (the authors' loss) or schane-perpos [default: schane].")
@click.option("--out", type=click.Path(), default=None,
              help="Output folder [default: results/finetune/<time>-...]; never overwritten.")
@click.option("--epochs", type=int, default=None,
              help="Passes over the training images [default: 5].")
@click.option("--steps", type=int, default=None, help="Optimiser steps instead of --epochs.")
@click.option("--batch-size", type=int, default=None, help="Images per step [default: 32].")
@click.option("--views", type=int, default=None,
              help="Augmented views of each image per step, >= 2 for schane [default: 2].")
@click.option("--lr", type=float, default=None,
              help="AdamW learning rate of the backbone, cosine decay; the head gets 10x "
                   "[default: 1e-4].")
@click.option("--weight-decay", type=float, default=None, help="[default: 0].")
@click.option("--lambda", "lam", type=float, default=None,
              help="schane: loss = (1 - lambda) CE + lambda SCHaNe [default: 0.9].")
@click.option("--tau", type=float, default=None, help="Temperature [default: 0.5].")
@click.option("--beta", type=float, default=None, help="Hard-negative concentration [default: 1].")
@click.option("--detach-weights", is_flag=True, default=None,
              help="Stop gradient through hard-negative weights.")
@click.option("--head", type=click.Choice(["cosine", "linear"]), default=None,
              help="Classifier head over the split's classes [default: cosine].")
@click.option("--logit-scale", type=float, default=None, help="Cosine head's scale [default: 10].")
@click.option("--holdout", type=float, default=None,
              help="Fraction of each class's images held out for top-1 [default: 0.2].")
@click.option("--image-size", type=int, default=None,
              help="Input size in pixels [default: the data set's, else the backbone's].")
@click.option("--backbone", default=None, help="timm model name [default: tf_efficientnet_lite0].")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start from this local timm-format weight file.")
@click.option("--seed", type=int, default=None,
              help="Seeds holdout, batches, views, head [default: 0].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="[default: auto].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def finetune_cmd(no_progress: bool, **options) -> None:
    """Fine-tune the whole backbone on a whole split; save timm weights for --weights.

    Trains on all images of --split except a seeded per-class holdout, reports top-1 on the
    holdout after every epoch, and writes weights.pth and finetune.json to --out."""
    from .fulltune import FullFinetuneConfig, finetune_full

    cfg = FullFinetuneConfig(**{k: v for k, v in options.items() if v is not None})
    result = finetune_full(cfg.validate(), progress=not no_progress,
                           echo=lambda m: click.echo(m, err=True))
    click.echo(result.text)


@main.command("check")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", "baseline_file", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Baseline file written by `bench baseline`.")
@click.option("--alpha", type=float, default=0.01, show_default=True,
              help="Significance level of the one-sided test (H1: accuracy dropped).")
@click.option("--min-drop", type=float, default=1.0, show_default=True,
              help="Smallest drop in accuracy points that fails the check.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def check_cmd(ctx: click.Context, run_dir: str, baseline_file: str, alpha: float,
              min_drop: float, as_json: bool) -> None:
    """Test RUN_DIR against a baseline, method by method; exit 1 on a significant drop.

    Paired t-test on the per-episode differences when both used the same episode file,
    Welch's t-test otherwise. A method fails when p < alpha and the drop > min-drop."""
    from .baseline import check_run

    result = check_run(run_dir, baseline_file, alpha=alpha, min_drop=min_drop)
    click.echo(result.json() if as_json else result.text)
    if not result.passed:
        ctx.exit(1)


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", type=click.Path(), required=True, help="Folder for the report (created; files in it are overwritten).")
@click.option("--format", "formats", default="md,csv,latex,html", show_default=True,
              help="Comma list of md, csv, latex, html. Figures (PNG + PDF) are always drawn "
                   "unless --no-figures.")
@click.option("--pair", "pairs", nargs=2, multiple=True, metavar="A B",
              help="Compare B - A episode by episode (method names or column labels such as "
                   "'schane(lambda=0.5)'); repeatable. Refused when A and B were scored on "
                   "different episode files. Default: CE vs SCHaNe, and each method vs ProtoNet.")
@click.option("--title", default=None, help="Report title.")
@click.option("--label", "labels", multiple=True, metavar="KEY=NAME",
              help="Show a method or column as NAME in every table and figure, e.g. --label ce=CE "
                   "--label schane=SCHaNe (a method's name replaces it in each of its columns: "
                   "SCHaNe(lambda=0.5)) or --label 'schane(lambda=0.5)=SCHaNe'; repeatable. The "
                   "CSV files keep the labels.")
@click.option("--no-figures", is_flag=True, help="Tables only (faster).")
def report(run_dirs: tuple[str, ...], out: str, formats: str, pairs: tuple, title: str | None,
           labels: tuple[str, ...], no_figures: bool) -> None:
    """Merge run folders into comparison tables, figures and an HTML/Markdown report.

    RUN_DIRS are folders written by `bench run` (or folders holding them, e.g. results/).
    Methods are paired only on identical episode files (same content hash)."""
    from .report import build_report, parse_formats
    from .report.merge import parse_label_option

    names = dict(parse_label_option(v) for v in labels)
    result = build_report(run_dirs, out, parse_formats(formats), pairs=list(pairs) or None,
                          title=title, figures=not no_figures, names=names)
    click.echo(result.text)


@main.group()
def data() -> None:
    """Where the data sets are looked for, whether they are there; download them; audit
    them for duplicates."""


_DATA_ROOT_HELP = "Folder holding the data sets [default: $FEWSHOT_DATA, else ~/data]."


@data.command("list")
@click.option("--data-root", type=click.Path(), default=None, help=_DATA_ROOT_HELP)
def data_list(data_root: str | None) -> None:
    """Each data set: where it looks, whether its files are there, classes and images per split."""
    from .data.catalog import format_catalog

    click.echo(format_catalog(data_root))


@data.command("download")
@click.argument("name")
@click.option("--data-root", type=click.Path(), default=None, help=_DATA_ROOT_HELP)
def data_download(name: str, data_root: str | None) -> None:
    """Fetch data set NAME into the data root (needs a network; torchvision/learn2learn)."""
    from .data.catalog import download_dataset

    click.echo(download_dataset(name, data_root))


@data.command("audit")
@click.argument("name")
@click.option("--data-root", type=click.Path(), default=None, help=_DATA_ROOT_HELP)
@click.option("--splits", default="train,val,test", show_default=True,
              help="Comma-separated splits to audit; pairs across them are found too.")
@click.option("--max-distance", type=int, default=None,
              help="Largest pHash Hamming distance (bits of 64) that counts as a near "
                   "duplicate, 0 to 16 [default: 4].")
@click.option("--csv", "csv_path", type=click.Path(), default=None,
              help="CSV of every pair found [default: results/audit-NAME.csv].")
@click.option("--groups-out", type=click.Path(), default=None,
              help="Also write the episode sampler's groups file (CSV split,index,group,...).")
@click.option("--examples", type=click.IntRange(min=0), default=3, show_default=True,
              help="Example pairs printed per kind.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def data_audit(name: str, data_root: str | None, splits: str, max_distance: int | None,
               csv_path: str | None, groups_out: str | None, examples: int,
               no_progress: bool) -> None:
    """Find exact and near-duplicate images of data set NAME: within a class, across
    classes and across splits (perceptual hash, imagehash.phash)."""
    from .data import audit

    max_distance = audit.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    audit.check_max_distance(max_distance)
    wanted = audit.parse_splits(splits)
    csv_file = audit.check_output(csv_path or audit.default_csv(name), "--csv")
    groups_file = audit.check_output(groups_out, "--groups-out") if groups_out else None
    if groups_file is not None and groups_file.resolve() == csv_file.resolve():
        raise BenchError(f"--csv and --groups-out are both {csv_file}; the groups file would "
                         "overwrite the pairs. Give them different file names.")
    result = audit.audit_dataset(name, data_root, wanted, max_distance, progress=not no_progress)
    audit.write_pairs(result, csv_file)
    click.echo(audit.format_audit(result, examples))
    click.echo(f"pairs: {csv_file} ({len(result.pairs):,} rows)")
    if groups_file is not None:
        audit.write_groups(result, groups_file)
        click.echo(f"groups: {groups_file} ({len(result.groups):,} images in "
                   f"{result.groups['group'].nunique():,} groups)")


def _commands(group: click.Group):
    """Every command under `group`, nested groups and their commands included."""
    for cmd in group.commands.values():
        yield cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd)


for _cmd in _commands(main):
    if not any(p.name == "debug" for p in _cmd.params):
        _cmd.params.append(_DEBUG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
