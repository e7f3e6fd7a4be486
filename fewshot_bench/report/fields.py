"""The configuration fields the report reads: those that make a setting (a row), those that
make a label (a column) for each method, their short names and how their values print."""

from __future__ import annotations

import math


# (key, header) of the fields that make a row of the main table; shown when they vary,
# data set / backbone / shots always.
SETTING_FIELDS = (
    ("dataset", "data set"), ("split", "split"), ("backbone", "backbone"),
    ("image_size", "image size"), ("tune", "tune"),
    ("ways", "ways"), ("shots", "shots"), ("queries", "queries"), ("n_episodes", "episodes"),
)
ALWAYS_SHOWN = ("dataset", "backbone", "shots")
# Hyperparameters that change a method's results (a label shows those that vary).
LOSS_FIELDS = ("lam", "tau", "beta", "detach_weights")
TRAIN_FIELDS = ("steps", "lr", "optimizer", "weight_decay", "logit_scale", "views", "bank_views")
HYPERPARAMETERS = ("lam", "tau", "beta")  # the sweeps the hyperparameter figure draws
# Which loss `schane` was (runs from before the switch to the authors' form say "perpos").
FORM_FIELD = "schane_form"
FORM_METHODS = ("schane", "schane-detached", "hcl")
LOGREG_FIELDS = ("views", "bank_views", "logreg_c", "logreg_solver")
FIELD_NAMES = {"lam": "lambda", "detach_weights": "detach", "weight_decay": "wd",
               "logit_scale": "scale", FORM_FIELD: "form", "logreg_c": "C",
               "logreg_solver": "solver"}
METHOD_ORDER = ("protonet", "linear-probe", "logreg", "ce", "schane", "schane-perpos", "schane-detached",
                "supcon", "hcl")


# The network's weights are part of what a label names, not of the setting: the same
# episodes scored with a pretrained and a fine-tuned backbone (`bench transfer`) are paired.
WEIGHTS_FIELD = "weights"


def method_fields(method: str) -> tuple[str, ...]:
    """The configuration fields that change `method`'s results (besides the setting)."""
    return (WEIGHTS_FIELD,) + _hyperparameter_fields(method)


def _hyperparameter_fields(method: str) -> tuple[str, ...]:
    if method == "protonet":  # frozen pretrained embeddings, clean views: no training
        return ("device",)
    if method == "logreg":  # frozen embeddings of the clean and `views` augmented views
        return LOGREG_FIELDS + ("device",)
    if method == "linear-probe":  # a plain linear head: no logit scale
        return tuple(f for f in TRAIN_FIELDS if f != "logit_scale") + ("device",)
    if method == "ce":  # lambda = 0: tau, beta and the weights never enter its loss
        return TRAIN_FIELDS + ("device",)
    form = (FORM_FIELD,) if method in FORM_METHODS else ()
    if method == "schane-detached":  # detached whatever --detach-weights says
        return (tuple(f for f in LOSS_FIELDS if f != "detach_weights") + form + TRAIN_FIELDS
                + ("device",))
    return LOSS_FIELDS + form + TRAIN_FIELDS + ("device",)


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(v)


def _train_key(info: dict) -> tuple:
    return tuple(repr(info.get(f)) for f in TRAIN_FIELDS + ("device",))
