"""The report's figures (drawn by `plots`): accuracy, paired scatter and differences, loss
curves, hyperparameter sweeps and embedding PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import CONTRASTIVE
from .fields import FIELD_NAMES, HYPERPARAMETERS, LOSS_FIELDS, _fmt_value, _train_key
from .merge import Merged


def _figures(merged: Merged, acc: pd.DataFrame, paired: pd.DataFrame,
             pca: dict[int, list[tuple]], fig_dir: Path) -> list[tuple[str, str, Path]]:
    """Draw every figure; returns (section, caption, png path) in report order."""
    from .. import plots

    fig_dir.mkdir(parents=True, exist_ok=True)
    name = merged.name  # figures show the display names (--label)
    methods = {name(lb): i["method"] for lb, i in merged.label_info.items()}
    colors = plots.label_colors([name(lb) for lb in merged.labels], methods)
    markers = {n: plots.method_marker(m) for n, m in methods.items()}
    shown_methods = {n: merged.method_names.get(m, m) for n, m in methods.items()}
    titles = merged.settings["title"].to_dict()
    out: list[tuple[str, str, Path]] = []

    out.append(("accuracy", "Mean accuracy per setting and method, with 95% confidence intervals "
                "over episodes.",
                plots.plot_accuracy(acc.assign(label=acc["label"].map(name)), titles,
                                    [name(lb) for lb in merged.labels], colors, fig_dir / "accuracy",
                                    markers=markers)[0]))

    # paired scatter + differences: the CE vs SCHaNe-like pairs (else the first pair) per setting
    scatter = []
    for sid in pd.unique(paired["setting_id"]) if len(paired) else []:
        g = paired[paired["setting_id"] == sid]
        main = [(r.a, r.b) for r in g.itertuples() if merged.label_info[r.a]["method"] == "ce"
                and merged.label_info[r.b]["method"] != "protonet"]
        for a, b in main or [(g.iloc[0]["a"], g.iloc[0]["b"])]:
            xa, xb = _paired_values(merged, sid, a, b)
            r = g[(g["a"] == a) & (g["b"] == b)].iloc[0]
            scatter.append(plots.PairPanel(titles[sid], name(a), name(b), xa, xb, r["mean_diff"], r["ci95"],
                                           int(r["wins"]), int(r["ties"]), int(r["losses"])))
    if scatter:
        out.append(("paired", "Per-episode accuracy of two methods on the same episodes (each "
                    "point one episode; jittered, since accuracies are multiples of 1/(N*Q)).",
                    plots.plot_paired_scatter(scatter, colors, fig_dir / "paired_scatter")[0]))
        out.append(("paired", "Distribution of the per-episode differences, with their mean "
                    "and its 95% confidence interval.",
                    plots.plot_differences(scatter, colors, fig_dir / "paired_differences")[0]))

    curves = []
    for sid in merged.settings.index:
        g = merged.rows[(merged.rows["setting_id"] == sid) & (merged.rows["status"] == "ok")]
        per_label = {}
        for lb in merged.labels:
            c = [x for x in g.loc[g["label"] == lb, "loss_curve"] if isinstance(x, list) and x]
            if c:
                n = max(map(len, c))
                arr = np.full((len(c), n), np.nan)
                for i, x in enumerate(c):
                    arr[i, :len(x)] = [np.nan if v is None else v for v in x]
                per_label[name(lb)] = arr
        if per_label:
            curves.append((titles[sid], per_label))
    if curves:
        out.append(("loss", "Fine-tuning loss per step (each method's own objective, on its own "
                    "axis), mean over episodes with a 95% confidence band.",
                    plots.plot_loss_curves(curves, colors, fig_dir / "loss_curves", markers=markers,
                                           methods=shown_methods)[0]))

    sweep = _sweep_panels(merged, acc)
    if sweep:
        out.append(("hyper", "Accuracy against the SCHaNe hyperparameters the runs vary (95% CI); "
                    "dashed: CE of the same setting with its 95% band.",
                    plots.plot_hyperparameter(sweep, fig_dir / "hyperparameters")[0]))

    for sid, items in pca.items():
        from ..embedding_quality import episode_scores

        panels = [(name(label), x, y, episode_scores(x, y)) for label, x, y, _, _ in items]
        ep = items[0][3]
        # class names, when every panel shows the same episode and its run saved them
        names = items[0][4] if all(it[3] == ep and it[4] == items[0][4] for it in items) else None
        slug = merged.settings.loc[sid, "slug"]
        out.append(("embeddings", f"Query embeddings of episode {ep} ({titles[sid]}), first two "
                    "principal components per method, coloured by class.",
                    plots.plot_embeddings_pca(panels, f"{titles[sid]}, episode {ep}",
                                              fig_dir / f"embeddings_pca_{slug}", class_names=names)[0]))
    return out


def _paired_values(merged: Merged, sid: int, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    g = merged.rows[(merged.rows["setting_id"] == sid) & (merged.rows["status"] == "ok")]
    sa = g[g["label"] == a].set_index("episode")["accuracy"].astype(float)
    sb = g[g["label"] == b].set_index("episode")["accuracy"].astype(float)
    common = sa.index.intersection(sb.index).sort_values()
    return 100 * sa.loc[common].to_numpy(), 100 * sb.loc[common].to_numpy()


def _sweep_panels(merged: Merged, acc: pd.DataFrame) -> list:
    """[(hyperparameter name, [series (name, x, mean, ci)], [references (name, mean, ci)])]
    for each of lambda, tau, beta that varies between SCHaNe-like labels of one setting."""
    panels = []
    for hp in HYPERPARAMETERS:
        series, refs = [], []
        for sid in pd.unique(acc["setting_id"]):
            g = acc[acc["setting_id"] == sid]
            loss_rows = g[g["method"].isin(CONTRASTIVE)]
            others = [h for h in LOSS_FIELDS if h != hp]
            keyed: dict[tuple, list] = {}
            for r in loss_rows.itertuples():
                info = merged.label_info[r.label]
                k = (r.method,) + tuple(repr(info.get(h)) for h in others) + (_train_key(info),)
                keyed.setdefault(k, []).append((info.get(hp), r.mean, r.ci95, r.label))
            for k, pts in keyed.items():
                if len({p[0] for p in pts}) < 2:
                    continue
                pts.sort(key=lambda p: p[0])
                info = merged.label_info[pts[0][3]]
                fixed = [f"{FIELD_NAMES.get(h, h)}={_fmt_value(info.get(h))}"
                         for h in HYPERPARAMETERS if h != hp]
                method = merged.method_names.get(info["method"], info["method"])
                legend = f"{method}, {merged.settings.loc[sid, 'title']} ({', '.join(fixed)})"
                series.append((legend, [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]))
                for r in g[g["method"] == "ce"].itertuples():
                    ref = (f"{merged.name(r.label)}, {merged.settings.loc[sid, 'title']}", r.mean, r.ci95)
                    if ref not in refs:
                        refs.append(ref)
        if series:
            panels.append((FIELD_NAMES.get(hp, hp), series, refs))
    return panels
