"""The figures of `bench report`, each saved as PNG and PDF.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg (PNG) and PDF
backends directly, never through pyplot: nothing here changes matplotlib's global backend
or state, so the functions are safe in notebooks, threads and headless machines. Every
figure states what it shows in its title, axis labels (with units) and legend, so it reads
without the surrounding text. Inputs are plain numbers (percent), prepared by `report`.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

__all__ = [
    "PairPanel",
    "label_colors",
    "method_marker",
    "plot_accuracy",
    "plot_paired_scatter",
    "paired_scatter_figure",
    "loss_curves_figure",
    "embeddings_pca_figure",
    "plot_differences",
    "plot_loss_curves",
    "plot_hyperparameter",
    "plot_embeddings_pca",
    "save",
]

DPI = 300  # PNG resolution: print quality (the PDFs are vector graphics)
_BASE = {"protonet": "#6f6f6f", "ce": "#1f77b4", "schane": "#d95f02", "schane-perpos": "#7570b3"}
_SHADES = {"ce": "Blues", "schane": "Oranges"}
_MARKERS = {"protonet": "s", "ce": "o", "schane": "^"}
_HP_AXIS = {"lambda": "λ (SCHaNe weight in the loss)", "tau": "τ (temperature)",
            "beta": "β (hard-negative concentration)"}


@dataclass
class PairPanel:
    """Per-episode accuracies (percent) of labels a and b on the same episodes."""

    title: str
    a: str
    b: str
    xa: np.ndarray
    xb: np.ndarray
    mean_diff: float  # b - a, percentage points
    ci95: float
    wins: int
    ties: int
    losses: int


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write `stem`.png and `stem`.pdf; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


def label_colors(labels: Sequence[str], methods: dict[str, str]) -> dict[str, str]:
    """A colour per label: ProtoNet grey, CE blue, SCHaNe orange (shades when a method has
    several labels, e.g. a lambda sweep), any other method from tab10."""
    from matplotlib.colors import to_hex

    out: dict[str, str] = {}
    by_method: dict[str, list[str]] = {}
    for lb in labels:
        by_method.setdefault(methods.get(lb, lb), []).append(lb)
    spare = iter([to_hex(c) for i, c in enumerate(colormaps["tab10"].colors) if i not in (0, 1, 7)])
    for m, lbs in by_method.items():
        if len(lbs) == 1 and m in _BASE:
            out[lbs[0]] = _BASE[m]
        elif m in _SHADES:
            cmap = colormaps[_SHADES[m]]
            for i, lb in enumerate(lbs):
                out[lb] = to_hex(cmap(0.45 + 0.5 * i / max(len(lbs) - 1, 1)))
        else:
            base = next(spare, "#333333")
            for lb in lbs:
                out[lb] = base
    return out


def method_marker(method: str) -> str:
    """The marker of a method's points and curves (ProtoNet square, CE circle, SCHaNe triangle)."""
    return _MARKERS.get(method, "D")


def _marker(label: str, markers: dict[str, str] | None = None) -> str:
    if markers and label in markers:
        return markers[label]
    return method_marker(label.split("(")[0].split("@")[0])


def _grid(n: int, width: float = 4.6, height: float = 4.0, max_cols: int = 3):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def _wrap(s: str, width: int = 40) -> str:
    return "\n".join(line for part in s.split("\n") for line in (textwrap.wrap(part, width) or [""]))


def _suptitle(fig: Figure, text: str, size: float = 12) -> None:
    """A figure title wrapped to the figure's width."""
    chars = int(fig.get_figwidth() * 72 / (0.55 * size))
    fig.suptitle(_wrap(text, chars), fontsize=size)


def plot_accuracy(acc: pd.DataFrame, titles: dict, labels: Sequence[str], colors: dict[str, str],
                  stem: Path, markers: dict[str, str] | None = None) -> list[Path]:
    """Mean accuracy with 95% CI error bars: one group per setting, one marker per label
    (`markers`: label -> marker; default by the label's method name)."""
    sids = list(pd.unique(acc["setting_id"]))
    present = [lb for lb in labels if lb in set(acc["label"])]
    fig = Figure(figsize=(max(6.0, 1.5 + 1.9 * len(sids) + 0.25 * len(present)), 4.8),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(present), 1)
    for j, lb in enumerate(present):
        g = acc[acc["label"] == lb].set_index("setting_id")
        xs = [i + (j - (len(present) - 1) / 2) * width for i, s in enumerate(sids) if s in g.index]
        ys = [g.loc[s, "mean"] for s in sids if s in g.index]
        es = [g.loc[s, "ci95"] for s in sids if s in g.index]
        es = [0.0 if not np.isfinite(e) else e for e in es]
        ax.errorbar(xs, ys, yerr=es, fmt=_marker(lb, markers), color=colors.get(lb), capsize=4, ms=7,
                    lw=1.6, label=lb)
    ax.set_xticks(range(len(sids)))
    ax.set_xticklabels([titles[s].replace(" · ", "\n", 2) for s in sids], fontsize=9)
    ax.set_xlim(-0.6, len(sids) - 0.4)
    ax.set_ylabel("accuracy on query images (%)")
    ax.set_title("Few-shot accuracy per setting: mean ± 95% CI over episodes")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="method", fontsize=9, loc="best")
    return save(fig, stem)


def _jitter(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = np.unique(np.round(values, 6))
    step = float(np.min(np.diff(u))) if u.size > 1 else 1.0
    return values + rng.uniform(-0.3, 0.3, size=values.shape) * step


def plot_paired_scatter(panels: Sequence[PairPanel], colors: dict[str, str], stem: Path) -> list[Path]:
    """Per-episode accuracy of a against b (`paired_scatter_figure`), saved as PNG and PDF."""
    return save(paired_scatter_figure(panels, colors), stem)


TIE_COLOR = "#1b1b1b"


def paired_scatter_figure(panels: Sequence[PairPanel], colors: dict[str, str]) -> Figure:
    """Per-episode accuracy of a (x) against b (y), one point per episode, with the diagonal.
    Wins and losses are jittered by under half an accuracy step and drawn translucent; ties
    lie exactly on the diagonal, so they are drawn on top of it, unjittered, as dark
    diamonds whose area grows with the number of tied episodes at that accuracy."""
    fig, axes = _grid(len(panels), 4.8, 4.8)
    rng = np.random.default_rng(0)
    for ax, p in zip(axes, panels):
        d = np.round(p.xb - p.xa, 9)
        lo = float(min(p.xa.min(initial=100), p.xb.min(initial=100)))
        hi = float(max(p.xa.max(initial=0), p.xb.max(initial=0)))
        pad = max(0.05 * (hi - lo), 2.0)
        jx, jy = _jitter(p.xa, rng), _jitter(p.xb, rng)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#8c8c8c", lw=1, ls="--",
                label="equal accuracy (y = x)", zorder=1)
        for mask, col, name in ((d > 0, colors.get(p.b, "#d95f02"), f"{p.b} better: {p.wins}"),
                                (d < 0, colors.get(p.a, "#1f77b4"), f"{p.a} better: {p.losses}")):
            ax.scatter(jx[mask], jy[mask], s=14, alpha=0.45, color=col, edgecolors="none", label=name,
                       zorder=2)
        tied, counts = np.unique(np.round(p.xa[d == 0], 6), return_counts=True)
        ax.scatter(tied, tied, s=12 + 10 * counts, marker="D", color=TIE_COLOR, edgecolors="white",
                   linewidths=0.6, alpha=0.9, zorder=3,
                   label=f"tie: {p.ties} (on y = x; area ∝ episodes)")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{p.a}: accuracy per episode (%)")
        ax.set_ylabel(f"{p.b}: accuracy per episode (%)")
        ax.set_title(_wrap(f"{p.title}\n{p.b} − {p.a} = {_signed(p.mean_diff)} ± {p.ci95:.2f} pts "
                           f"({len(p.xa)} episodes)", 48), fontsize=10)
        leg = ax.legend(fontsize=8, loc="lower right")
        for h in leg.legend_handles:  # legend markers of one size, whatever the counts
            if hasattr(h, "set_sizes"):
                h.set_sizes([30])
        ax.grid(alpha=0.25)
    _suptitle(fig, "Paired per-episode accuracy (one point per episode, jittered; ties on the "
                   "diagonal)", 12)
    return fig


def _signed(x: float, digits: int = 2) -> str:
    """`x` with its sign, a real minus sign (U+2212) for negative values."""
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def plot_differences(panels: Sequence[PairPanel], colors: dict[str, str], stem: Path) -> list[Path]:
    """Histogram of per-episode differences b - a with their mean and its 95% CI."""
    fig, axes = _grid(len(panels), 5.2, 3.9)
    for ax, p in zip(axes, panels):
        d = np.round(p.xb - p.xa, 6)
        u = np.unique(d)
        steps = np.diff(u)
        step = float(steps.min()) if steps.size else 1.0
        if u.size > 1 and (u.max() - u.min()) / step <= 80:
            bins = np.arange(u.min() - step / 2, u.max() + step, step)
        else:
            bins = 40 if u.size > 1 else np.array([u[0] - 0.5, u[0] + 0.5])
        ax.hist(d, bins=bins, color="#b9b9b9", edgecolor="white", label="episodes")
        col = colors.get(p.b, "#d95f02")
        if np.isfinite(p.ci95):
            ax.axvspan(p.mean_diff - p.ci95, p.mean_diff + p.ci95, color=col, alpha=0.25,
                       label=f"95% CI [{_signed(p.mean_diff - p.ci95)}, {_signed(p.mean_diff + p.ci95)}]")
        ax.axvline(p.mean_diff, color=col, lw=2, label=f"mean {_signed(p.mean_diff)} pts")
        ax.axvline(0, color="black", lw=1, ls="--", label="no difference")
        ax.set_xlabel(f"{p.b} − {p.a}: accuracy difference per episode (percentage points)", fontsize=9)
        ax.set_ylabel("number of episodes")
        ax.set_title(_wrap(f"{p.title}\n{p.b} better in {p.wins}, tied in {p.ties}, worse in "
                           f"{p.losses} of {len(d)} episodes", 52), fontsize=10)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.25)
    _suptitle(fig, "Distribution of paired per-episode differences", 12)
    return save(fig, stem)


def _band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over episodes per step and the 95% t-interval half width (nan-aware)."""
    n = np.isfinite(curves).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(np.where(np.isfinite(curves), curves, np.nan), axis=0)
        sd = np.nanstd(curves, axis=0, ddof=1) if curves.shape[0] > 1 else np.full(curves.shape[1], np.nan)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    half[n < 2] = np.nan
    return mean, half


def plot_loss_curves(curves: Sequence[tuple[str, dict[str, np.ndarray]]], colors: dict[str, str],
                     stem: Path, markers: dict[str, str] | None = None,
                     methods: dict[str, str] | None = None) -> list[Path]:
    """Training loss per fine-tuning step (`loss_curves_figure`), saved as PNG and PDF."""
    return save(loss_curves_figure(curves, colors, markers, methods), stem)


def loss_curves_figure(curves: Sequence[tuple[str, dict[str, np.ndarray]]], colors: dict[str, str],
                       markers: dict[str, str] | None = None,
                       methods: dict[str, str] | None = None) -> Figure:
    """Training loss per fine-tuning step: mean over episodes with a 95% CI band, one panel
    per (setting, method) with the method's labels (e.g. a lambda sweep) in it, each panel
    on its own y axis: the methods' objectives differ in scale (CE about 0.05 after a few
    steps, SCHaNe's contrastive term about 3), so one shared axis would flatten CE.
    `curves`: [(setting title, {label: array [episodes, steps]})]; `methods`: label ->
    method (default: the label up to "(" or "@")."""
    import warnings

    def method_of(lb: str) -> str:
        return (methods or {}).get(lb) or lb.split("(")[0].split("@")[0]

    panels = []  # (setting title, method, {label: array})
    for title, per_label in curves:
        groups: dict[str, dict[str, np.ndarray]] = {}
        for lb, arr in per_label.items():
            groups.setdefault(method_of(lb), {})[lb] = arr
        panels += [(title, m, g) for m, g in groups.items()]
    cols = max((len({method_of(lb) for lb in pl}) for _, pl in curves), default=1)
    fig, axes = _grid(len(panels), 4.4, 3.6, max_cols=min(max(cols, 1), 4))
    for ax, (title, method, per_label) in zip(axes, panels):
        for lb, arr in per_label.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, half = _band(np.asarray(arr, dtype=float))
            x = np.arange(mean.size)
            col = colors.get(lb)
            ax.plot(x, mean, color=col, lw=2, label=f"{lb} ({arr.shape[0]} episodes)",
                    marker=_marker(lb, markers) if mean.size <= 12 else None)
            if np.isfinite(half).any():
                ax.fill_between(x, mean - half, mean + half, color=col, alpha=0.2, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("fine-tuning step (loss before the step's update)", fontsize=9)
        ax.set_ylabel("training loss on the support set", fontsize=9)
        ax.set_title(_wrap(f"{method}: {title}", 46), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.25)
    _suptitle(fig, "Fine-tuning loss curves: mean over episodes, band = 95% CI; one panel and "
                   "y axis per method (each method's own objective; SCHaNe adds its contrastive "
                   "term, so the scales differ)", 11)
    return fig


def plot_hyperparameter(panels: Sequence[tuple], stem: Path) -> list[Path]:
    """Accuracy against lambda, tau or beta. `panels`: [(name, series, refs)], series
    [(legend, x, mean, ci)], refs [(legend, mean, ci)] drawn as dashed lines with bands."""
    fig, axes = _grid(len(panels), 5.6, 4.4, max_cols=3)
    # SCHaNe-like series in warm colours, CE references in blues, as in the other figures
    warm = ["#d95f02", "#7570b3", "#e7298a", "#a6761d", "#66a61e", "#e6ab02"]
    cool = ["#1f77b4", "#17becf", "#393b79", "#6baed6"]
    styles = ["--", ":", "-.", (0, (5, 1))]
    for ax, (name, series, refs) in zip(axes, panels):
        for i, (legend, x, mean, ci) in enumerate(series):
            ci = [0.0 if not np.isfinite(c) else c for c in ci]
            ax.errorbar(x, mean, yerr=ci, marker="^", capsize=4, lw=1.6, color=warm[i % len(warm)],
                        label=_wrap(legend, 46))
        for i, (legend, mean, ci) in enumerate(refs):
            col = cool[i % len(cool)]
            ax.axhline(mean, color=col, ls=styles[i % len(styles)], lw=1.4, label=_wrap(legend, 46))
            if np.isfinite(ci):
                ax.axhspan(mean - ci, mean + ci, color=col, alpha=0.12, lw=0)
        xs = [v for _, x, _, _ in series for v in x]
        if name == "tau" and min(xs) > 0 and max(xs) / min(xs) >= 5:
            ax.set_xscale("log")
        ax.set_xlabel(_HP_AXIS.get(name, name))
        ax.set_ylabel("accuracy on query images (%)")
        ax.set_title(f"Accuracy against {name} (mean ± 95% CI)", fontsize=10)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.25)
    _suptitle(fig, "Hyperparameter sensitivity", 12)
    return save(fig, stem)


def plot_embeddings_pca(panels: Sequence[tuple[str, np.ndarray, np.ndarray, dict]], title: str,
                        stem: Path, class_names: Sequence[str] | None = None) -> list[Path]:
    """One episode's query embeddings per label (`embeddings_pca_figure`), saved as PNG and PDF."""
    return save(embeddings_pca_figure(panels, title, class_names), stem)


def embeddings_pca_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray, dict]], title: str,
                          class_names: Sequence[str] | None = None) -> Figure:
    """One episode's query embeddings per label, side by side: first two principal components
    (fitted per label), coloured by class. `panels`: [(label, X [n, D], y [n], scores)];
    `class_names[c]`: the name of episode class c (the legend says "class c" without)."""
    from .embedding_quality import pca_2d

    fig, axes = _grid(len(panels), 4.2, 4.3, max_cols=4)
    classes = np.unique(np.concatenate([np.asarray(y) for _, _, y, _ in panels]))
    cmap = colormaps["tab10"]
    markers = "osD^vP*Xh<"

    def name(c) -> str:
        if class_names is not None and 0 <= int(c) < len(class_names):
            return str(class_names[int(c)])
        return f"class {c}"

    for ax, (label, x, y, scores) in zip(axes, panels):
        coords, frac = pca_2d(x)
        y = np.asarray(y)
        for k, c in enumerate(classes):
            m = y == c
            ax.scatter(coords[m, 0], coords[m, 1], s=30, alpha=0.8, color=cmap(k % 10),
                       marker=markers[k % len(markers)], edgecolors="white", linewidths=0.4,
                       label=name(c))
        sub = ""
        if scores:
            sub = (f"\neigen-entropy isotropy {scores.get('isotropy_entropy', float('nan')):.2f} · "
                   f"silhouette {scores.get('separation', float('nan')):.2f}")
        ax.set_title(f"{label}{sub}", fontsize=10)
        ax.set_xlabel(f"PC1 ({frac[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({frac[1]:.0%} of variance)")
        ax.grid(alpha=0.25)
        ax.set_aspect("equal", adjustable="datalim")
    # one legend for all panels, under them: class names can be long
    handles, texts = axes[0].get_legend_handles_labels()
    fig.legend(handles, [_wrap(t, 28) for t in texts], title="query class", fontsize=8,
               loc="outside lower center", ncols=min(len(texts), 5 if len(panels) > 1 else 3))
    _suptitle(fig, f"Query embeddings, 2-D PCA per method: {title}", 11)
    return fig
