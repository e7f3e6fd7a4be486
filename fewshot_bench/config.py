"""Run configuration as one plain dataclass, validated before any work starts."""

from __future__ import annotations

import math
import os
import typing
from dataclasses import asdict, dataclass, fields

from . import split_ratios as ratios
from .errors import BenchError
from .shots import parse_shots_dist

# protonet, linear-probe and logreg leave the backbone as it is (no fine-tuning): nearest
# class mean of the pretrained embeddings, a linear classifier trained on them with the
# fine-tuning optimiser, and the authors' L2 logistic regression (logreg.py). schane is the
# authors' loss (GLA-IR/SCHaNe), schane-perpos this harness's earlier per-positive
# reconstruction. supcon and hcl are SCHaNe's ablations: labels without hard-negative
# weights, and hard-negative weights without labels; schane-detached is SCHaNe with no
# gradient through those weights.
METHODS = ("protonet", "linear-probe", "logreg", "ce", "schane", "schane-perpos",
           "schane-detached", "supcon", "hcl")
# trained with (1 - lambda) CE + lambda * term; the value names the term (losses.py)
CONTRASTIVE_TERM = {"schane": "schane", "schane-perpos": "schane-perpos",
                    "schane-detached": "schane", "supcon": "supcon", "hcl": "hcl"}
# What `schane` (and schane-detached, hcl) compute: the authors' form. Records written before
# the switch lack the field and ran the per-positive form (results.BEFORE_ADDED).
SCHANE_FORM = "authors"
CONTRASTIVE = tuple(CONTRASTIVE_TERM)
FROZEN_BACKBONE = ("protonet", "linear-probe", "logreg")  # never change the backbone
LOGREG_SOLVERS = ("torch", "sklearn")  # logreg.SOLVERS; sklearn is the reference
TUNE_MODES = ("head", "norm", "last", "full")
OPTIMIZERS = ("adam", "adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
# The fine-tuning defaults of each --tune mode (lr and steps of the optimiser), chosen on
# validation episodes with the rule of docs/protocol.md (the most accurate CE setting;
# SCHaNe shares them). An explicit --lr / --steps wins; run.json records the values used.
# `head`, `norm` and `last` are selected on 600 val episodes; `full` on 50 (its episodes
# cost 25-50x a `last` episode here; docs/protocol.md).
# head_lr_factor: the cosine head's lr over the backbone's (--tune head: the head alone, at lr).
TUNE_DEFAULTS = {
    "head": {"lr": 0.001, "steps": 10, "head_lr_factor": 1.0},
    "norm": {"lr": 0.001, "steps": 10, "head_lr_factor": 1.0},
    # 600 val episodes, 1-shot; the head at 0.03x-0.1x is 0.15 points above 1x (docs/protocol.md)
    "last": {"lr": 0.0003, "steps": 50, "head_lr_factor": 0.03},
    "full": {"lr": 0.0001, "steps": 80, "head_lr_factor": 1.0},  # 50 val episodes, 1-shot
}
# Where a mode's validation optimum moves with the shot count: {mode: {K: values}} replaces
# TUNE_DEFAULTS[mode] for episodes whose fewest shots per class are K or more. `last` at 5
# shots wants a 10x larger lr than at 1 (docs/protocol.md); `norm` and `head` share one
# optimum; `full` is selected at 1 shot only. Shot counts between two selections take the
# lower one's values (not separately validated).
TUNE_DEFAULTS_BY_SHOTS = {
    # 200 val episodes, 5-shot (lr and steps at head x 1; head x 0.03 then +0.13 +- 0.34)
    "last": {5: {"lr": 0.003, "steps": 25}},
}

# Upper bounds, far above any real use, so a typo (an extra zero or ten) is refused before
# anything is written instead of exhausting memory or hanging: episode arrays are allocated
# for all episodes up front (600-2000 is the usual protocol), every step of every episode
# runs (10 to 50 are the defaults), the feature bank holds bank-views x images features, and its
# memory grows with the image size squared (timm backbones take at most about 600 px).
MAX_EPISODES = 100_000
MAX_STEPS = 100_000
MAX_BANK_VIEWS = 256
MAX_IMAGE_SIZE = 1024
# Optimisers hand lr-sized numbers to float32 kernels as scalars, and torch refuses one
# above float32's largest ("value cannot be converted to type float without overflow"):
# Adam's first step is lr / (1 - beta1) = 10 lr, SGD's lr, Adam's and SGD's weight decay.
FLOAT32_MAX = 3.4028234663852886e38
ADAM_FIRST_STEP = 10.0  # 1 / (1 - beta1), beta1 = 0.9


def tune_defaults(tune: str, shots: int) -> dict:
    """The default {"lr", "steps"} of --tune `tune` for episodes with at least `shots`
    support images per class (TUNE_DEFAULTS, then TUNE_DEFAULTS_BY_SHOTS)."""
    values = dict(TUNE_DEFAULTS[tune])
    for from_shots, override in sorted(TUNE_DEFAULTS_BY_SHOTS.get(tune, {}).items()):
        if shots >= from_shots:
            values.update(override)
    return values


def describe_tune_default(key: str) -> str:
    """One line for --help: each mode's default `key` ("lr" or "steps"), with its
    per-shot values, e.g. "norm 0.001, last 0.0003 (0.003 from 5 shots)"."""
    parts = []
    for mode, values in TUNE_DEFAULTS.items():
        more = [f"{v[key]:g} from {k} shots"
                for k, v in sorted(TUNE_DEFAULTS_BY_SHOTS.get(mode, {}).items())
                if v.get(key, values[key]) != values[key]]
        parts.append(f"{mode} {values[key]:g}" + (f" ({', '.join(more)})" if more else ""))
    return ", ".join(parts)


def check_float32_step(lr: float, weight_decay: float, optimizer: str, hint: str,
                       lr_factor: float = 1.0) -> None:
    """BenchError when `lr` (times `lr_factor`, e.g. a head's larger lr) or `weight_decay`
    would overflow float32 inside the optimiser `optimizer`, which torch raises mid-run."""
    step = lr * lr_factor * (1.0 if optimizer == "sgd" else ADAM_FIRST_STEP)
    if step > FLOAT32_MAX:
        factor = "" if step == lr else f" ({step / lr:g} x lr: {optimizer}'s first step)"
        raise BenchError(f"--lr {lr:g} is too large: the optimiser's step{factor} would exceed "
                         f"the largest float32 number ({FLOAT32_MAX:.3g}). {hint}")
    if weight_decay > FLOAT32_MAX:
        raise BenchError(f"--weight-decay {weight_decay:g} is larger than the largest float32 "
                         f"number ({FLOAT32_MAX:.3g}), which the optimiser cannot use; 0 to "
                         "0.1 is usual.")


def check_split_ratios(dataset: str, value: str | None) -> str | None:
    """--split-ratios in canonical form (None for the default); BenchError when malformed or
    given for a data set other than folder:PATH."""
    value = ratios.canonical(value)
    if value is not None and not dataset.startswith("folder:"):
        raise BenchError(f"--split-ratios applies to folder:PATH data sets only: {dataset} has "
                         "a fixed class split. Leave --split-ratios out.")
    return value


def flag(name: str) -> str:
    """The `bench run` option of a RunConfig field: lam -> --lambda, bank_views -> --bank-views."""
    return "--lambda" if name == "lam" else "--" + name.replace("_", "-")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _coerce(name: str, value, kind):
    """`value` as the type `kind` of field `name`, from what a user would pass (the numeric
    string "5", "ce,schane" or a list for a tuple, a Path for a str); BenchError otherwise.
    Only lossless conversions: 5.0 -> 5, never 5.5 -> 5 or True -> 1."""
    args = typing.get_args(kind)
    if type(None) in args:  # `X | None`: None stays None
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is tuple:  # tuple[X, ...]: a comma list or any iterable
        item = typing.get_args(kind)[0]
        parts = value.split(",") if isinstance(value, str) else value
        example = "whole numbers such as 5,10" if item is int else "names such as ce,schane"
        try:
            # "ce, schane" and ["ce", "schane"] alike; an empty item (a trailing comma) is dropped
            return tuple(_coerce(name, p.strip() if isinstance(p, str) else p, item)
                         for p in list(parts) if not (isinstance(p, str) and not p.strip()))
        except (TypeError, BenchError):
            raise BenchError(f"{flag(name)} must be a comma list of {example} (got "
                             f"{value!r}).") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise BenchError(f"{flag(name)} must be true or false (got {value!r}).")
    if kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        raise BenchError(f"{flag(name)} must be a string (got {value!r}).")
    if kind in (int, float):
        number = value
        if isinstance(value, str):
            text = value.strip()
            try:  # int() first: "99999999999999999999" stays exact
                number = int(text) if kind is int else float(text)
            except ValueError:
                number = _float_or_none(text)  # "1e3" is a whole number too
        elif isinstance(value, bool) or not hasattr(value, "__float__"):
            number = None  # True is an int to Python, never a count to a user
        if kind is float and number is not None:
            return float(number)
        if isinstance(number, int) or (number is not None and float(number).is_integer()):
            return int(number)  # 5, 5.0, "5", "1e3", numpy integers
        what = "a whole number" if kind is int else "a number"
        raise BenchError(f"{flag(name)} must be {what} (got {value!r}).")
    return value


@dataclass
class RunConfig:
    """The settings of one `bench run`: every field is a `bench run` option (`lam` is
    --lambda, `bank_views` --bank-views, ...). `validate()` checks them, fills in the
    defaults of --tune (`steps`, `lr`) and converts what a user would pass: numeric strings
    ("5") for numbers, a comma string ("ce,schane") or a list for `methods` and
    `eval_steps`, a Path for a folder.

    Units and meanings:
      dataset, split: the data set (emoji, cifar-fs, ..., folder:PATH) and its class split.
      ways, shots, queries: classes per episode, support and query images per class.
      shots_dist: imbalanced episodes (uniform:1-5, zipf:A:LO-HI) instead of `shots`.
      episodes, seed: how many episodes are sampled, and the seed of everything random.
      backbone, weights, image_size: the timm model, an optional local weight file, the
        input size in pixels (None: the data set's, else the backbone's).
      methods: names from METHODS. lam, tau, beta: the contrastive term's weight in [0, 1],
        temperature and hard-negative concentration.
      tune: what trains per episode (TUNE_MODES); steps, lr: optimiser steps and learning
        rate per episode (None: tune_defaults(tune, shots)); eval_steps: also score the queries
        after these step counts.
      views, bank_views: augmented views per support image per step, and stored per image.
      episodes_dir, out: where episode files are stored and reused, and the results folder
        (None: results/<run-id> for `bench run`; a fresh temporary folder for `fb.run`).
    Accuracies in a run's per-episode rows are fractions in [0, 1]; summaries are percent.
    """

    # what to evaluate on
    dataset: str = "emoji"
    data_root: str | None = None
    split: str = "test"
    split_ratios: str | None = None  # folder:PATH's automatic split; None: 0.6:0.2:0.2
    ways: int = 5
    shots: int = 1
    shots_dist: str | None = None  # imbalanced episodes, e.g. uniform:1-5 (shots.py)
    queries: int = 15
    episodes: int = 600
    seed: int = 0
    # which images are copies of one another (data/groups.py): auto (the data set's own
    # groups: emoji code points), none, or a groups CSV from `bench data audit`
    groups: str = "auto"
    # the network
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None
    image_size: int | None = None  # None: the backbone's own input size
    # methods and their hyperparameters
    methods: tuple[str, ...] = ("protonet", "ce", "schane")
    lam: float = 0.9
    tau: float = 0.5  # the authors' few-shot command (GLA-IR/SCHaNe README)
    beta: float = 1.0
    detach_weights: bool = False
    schane_form: str = SCHANE_FORM  # recorded, not an option: which loss `schane` is
    views: int = 2
    bank_views: int = 8
    steps: int | None = None  # None: tune_defaults of --tune and shots (set by validate())
    lr: float | None = None  # None: tune_defaults of --tune and shots
    # the cosine head's lr is this x lr (norm, last, full); None: tune_defaults
    head_lr_factor: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    logit_scale: float = 10.0
    # also record each trained episode's query accuracy after these many steps (<= steps):
    # a learning curve, and a steps grid from one run (finetune.FinetuneConfig.eval_steps)
    eval_steps: tuple[int, ...] = ()
    logreg_c: float = 1.0  # logreg: inverse L2 strength, scikit-learn's C (the authors' 1)
    logreg_solver: str = "torch"  # logreg: batched exact solver, or scikit-learn per episode
    tune: str = "norm"
    # where and how
    device: str = "auto"
    # None: the committed episodes/ when it holds the file, else the user cache
    # (episodes.default_episodes_dir); `bench run` passes its --episodes-dir, "episodes"
    episodes_dir: str | None = None
    out: str | None = None
    episode_batch: int | None = None  # None: chosen from memory; never changes results
    compile: bool = True  # torch.compile the --tune norm step where it pays (fused.py)
    embeddings: int = 0  # save query embeddings of the first this-many episodes
    fail_fast: bool = False  # stop at the first failed episode instead of recording it

    def validate(self) -> "RunConfig":
        """Refuse bad values with a message that says how to fix them (before any work).
        Converts each field to its type first (see the class docstring); returns self."""
        def bad(msg: str) -> None:
            raise BenchError(msg)

        for f in fields(self):  # before any check compares a number with a string
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), _HINTS[f.name]))
        if self.ways < 2:
            bad(f"--ways must be at least 2 (got {self.ways}): an episode needs classes to tell apart.")
        self.split_ratios = check_split_ratios(self.dataset, self.split_ratios)
        if self.shots_dist is not None:
            # imbalanced episodes: the stored support set is as wide as the largest count
            dist = parse_shots_dist(self.shots_dist)
            self.shots_dist, self.shots = str(dist), dist.hi
        if self.shots < 1:
            bad(f"--shots must be at least 1 (got {self.shots}).")
        if self.queries < 1:
            bad(f"--queries must be at least 1 (got {self.queries}).")
        if self.episodes < 1:
            bad(f"--episodes must be at least 1 (got {self.episodes}).")
        if self.seed < 0:
            bad(f"--seed must be 0 or more (got {self.seed}).")
        if self.episodes > MAX_EPISODES:
            bad(f"--episodes must be at most {MAX_EPISODES} (got {self.episodes}); 600 to 2000 "
                "give confidence intervals well under a point.")
        if not isinstance(self.groups, str) or not self.groups.strip():
            bad(f"--groups must be auto, none or a groups file (got {self.groups!r}).")
        if not self.methods:
            bad("--methods is empty: give a comma list such as ce,schane.")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            bad(f"Unknown method(s) {', '.join(unknown)} in --methods. Known methods: {', '.join(METHODS)}.")
        if len(set(self.methods)) != len(self.methods):
            bad(f"--methods lists a method twice: {','.join(self.methods)}.")
        if self.schane_form != SCHANE_FORM:
            bad(f"schane_form {self.schane_form!r} is not this version's: `schane` is the "
                f"authors' loss ({SCHANE_FORM!r}); the earlier per-positive form is the method "
                "schane-perpos. Remove schane_form from the configuration.")
        if not 0.0 <= self.lam <= 1.0:
            bad(f"--lambda must lie in [0, 1] (got {self.lam}): 0 is plain CE, 1 is SCHaNe alone.")
        if self.tune not in TUNE_MODES:
            bad(f"Unknown --tune '{self.tune}'. Use one of {', '.join(TUNE_MODES)}.")
        fewest = parse_shots_dist(self.shots_dist).lo if self.shots_dist else self.shots
        defaults = tune_defaults(self.tune, fewest)
        if self.lr is None:
            self.lr = defaults["lr"]
        if self.steps is None:
            self.steps = defaults["steps"]
        if self.tune == "head" and self.head_lr_factor not in (None, 1.0):
            bad(f"--head-lr-factor {self.head_lr_factor:g} applies where backbone tensors train "
                "with the head (--tune norm, last, full); --tune head trains the head alone, "
                "at --lr. Leave --head-lr-factor out, or set --lr.")
        if self.head_lr_factor is None:
            self.head_lr_factor = defaults["head_lr_factor"]
        for name in ("lam", "tau", "beta", "lr", "head_lr_factor", "weight_decay", "logit_scale",
                     "logreg_c"):
            if not math.isfinite(getattr(self, name)):
                bad(f"{flag(name)} must be a finite number (got {getattr(self, name)}).")
        if not self.tau > 0:
            bad(f"--tau must be positive (got {self.tau}); 0.5 is the authors' value.")
        if self.beta < 0:
            bad(f"--beta must be >= 0 (got {self.beta}); 0 turns hard-negative weighting off.")
        if self.views < 1:
            bad(f"--views must be at least 1 (got {self.views}).")
        contrastive = [m for m in self.methods if m in CONTRASTIVE]
        if contrastive and self.views < 2 and (fewest < 2 or "hcl" in contrastive):
            why = ("hcl's positives are the other views of the same image" if "hcl" in contrastive
                   else "with --shots 1 no support image then has a positive")
            bad(f"--views 1 makes the contrastive term of {', '.join(contrastive)} exactly zero "
                f"({why}), so it would equal CE. Use --views 2 or more.")
        if self.bank_views < self.views:
            bad(f"--bank-views ({self.bank_views}) must be at least --views ({self.views}).")
        if self.bank_views > MAX_BANK_VIEWS:
            bad(f"--bank-views must be at most {MAX_BANK_VIEWS} (got {self.bank_views}): the "
                "feature bank keeps every view of every image in memory; 8 is the default.")
        if self.steps < 0:
            bad(f"--steps must be >= 0 (got {self.steps}).")
        if self.steps > MAX_STEPS:
            bad(f"--steps must be at most {MAX_STEPS} (got {self.steps}); "
                f"{defaults['steps']} is the default of --tune {self.tune}.")
        self.eval_steps = tuple(sorted(set(self.eval_steps)))
        if self.eval_steps and not 0 <= self.eval_steps[0] <= self.eval_steps[-1] <= self.steps:
            bad(f"--eval-steps {','.join(map(str, self.eval_steps))}: each must lie between 0 "
                f"and --steps ({self.steps}). Raise --steps to the largest, or drop the others.")
        if self.eval_steps and not [m for m in self.methods if m not in ("protonet", "logreg")]:
            bad("--eval-steps applies to methods that train (ce, schane, linear-probe, ...); "
                f"--methods {','.join(self.methods)} trains nothing. Add one, or drop --eval-steps.")
        if not self.lr >= 0:
            bad(f"--lr must be >= 0 (got {self.lr}).")
        if not self.head_lr_factor > 0:
            bad(f"--head-lr-factor must be positive (got {self.head_lr_factor:g}): the head's "
                f"lr is this times --lr; 1 trains head and backbone at the same lr.")
        if self.weight_decay < 0:
            bad(f"--weight-decay must be >= 0 (got {self.weight_decay}).")
        if self.optimizer not in OPTIMIZERS:
            bad(f"Unknown --optimizer '{self.optimizer}'. Use one of {', '.join(OPTIMIZERS)}.")
        check_float32_step(self.lr, self.weight_decay, self.optimizer,
                           f"--tune {self.tune}'s default here is {defaults['lr']:g}.",
                           lr_factor=max(1.0, self.head_lr_factor))
        if self.tune == "head" and any(m in CONTRASTIVE for m in self.methods):
            bad("--tune head trains only the classifier head, so the embeddings a contrastive "
                f"term ({', '.join(CONTRASTIVE)}) acts on cannot change and it would equal CE. "
                "Use --tune full, which works for every backbone, or --tune norm or last where "
                "the backbone supports them (docs/tune-modes.md).")
        if self.detach_weights and {"schane", "schane-detached"} <= set(self.methods):
            bad("--detach-weights makes schane detach its hard-negative weights too, so schane "
                "and schane-detached would be the same method. Drop --detach-weights to "
                "compare the two.")
        if self.device not in DEVICES:
            bad(f"Unknown --device '{self.device}'. Use auto, cpu or cuda.")
        if self.logit_scale <= 0:
            bad(f"--logit-scale must be positive (got {self.logit_scale}).")
        if self.logreg_c <= 0:
            bad(f"--logreg-c must be positive (got {self.logreg_c}); it is the inverse "
                "strength of the L2 penalty, 1 as in the authors' evaluation.")
        if self.logreg_solver not in LOGREG_SOLVERS:
            bad(f"Unknown --logreg-solver '{self.logreg_solver}'. Use torch (batched, the "
                "default) or sklearn (scikit-learn, one episode at a time: the reference).")
        if self.image_size is not None and not 16 <= self.image_size <= MAX_IMAGE_SIZE:
            bad(f"--image-size must be between 16 and {MAX_IMAGE_SIZE} pixels (got "
                f"{self.image_size}); leave it out for the backbone's own size.")
        if self.episode_batch is not None and self.episode_batch < 1:
            bad(f"--episode-batch must be at least 1 (got {self.episode_batch}).")
        if self.embeddings < 0:
            bad(f"--embeddings must be >= 0 (got {self.embeddings}).")
        return self

    @property
    def episodes_dataset(self) -> str:
        """The data set name of this run's episode file (with the --split-ratios when not
        the default: another class split must not share the default's episode file)."""
        return ratios.episodes_dataset(self.dataset, self.split_ratios)

    @property
    def trained_methods(self) -> tuple[str, ...]:
        """The methods that fine-tune the backbone per episode."""
        return tuple(m for m in self.methods if m not in FROZEN_BACKBONE)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["eval_steps"] = list(self.eval_steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for name in ("methods", "eval_steps"):
            if name in kw:
                kw[name] = tuple(kw[name])
        return cls(**kw)


_HINTS = typing.get_type_hints(RunConfig)  # field -> type (the annotations are strings)
