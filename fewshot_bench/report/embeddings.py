"""The embedding-quality table: the scores of the saved embeddings per (setting, label), and
the episode each setting's PCA figure draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .merge import Merged
from .tables import Table, _with_setting_columns


def embedding_table(merged: Merged) -> tuple[pd.DataFrame, dict[int, list[tuple]]]:
    """(scores: one row per (setting, label) with saved embeddings: episodes and the mean and
    95% CI over saved episodes of each score; pca: setting id -> [(label, X, y, episode,
    class names [N] or None)] for one episode every label of the setting saved, the lowest
    such id; the names are those the run saved in embeddings.npz, None for older runs)."""
    from .. import embedding_quality as eq

    cache: dict[Path, tuple] = {}
    rows, per_setting = [], {}
    for e in merged.entries:
        if e.run.embeddings is None:
            continue
        if e.run.embeddings not in cache:
            cache[e.run.embeddings] = (*eq.load_embeddings(e.run.embeddings),
                                       eq.load_class_names(e.run.embeddings))
        episodes, labels, per_method, names = cache[e.run.embeddings]
        if e.method not in per_method:
            continue
        z = per_method[e.method]
        scores = eq.embedding_scores(z, labels, episodes)
        rows.append({"setting_id": e.setting_id, "label": e.label, "method": e.method,
                     **eq.summarise_scores(scores)})
        per_setting.setdefault(e.setting_id, []).append((e.label, episodes, labels, z, names))
    pca: dict[int, list[tuple]] = {}
    for sid, items in per_setting.items():
        common = set.intersection(*(set(map(int, ep)) for _, ep, _, _, _ in items))
        ep = min(common) if common else None
        chosen = []
        for label, episodes, labels, z, names in items:
            i = int(np.flatnonzero(episodes == ep)[0]) if ep is not None else 0
            ok = names is not None and names.ndim == 2 and names.shape[0] == episodes.size
            chosen.append((label, z[i].astype(np.float64), labels, int(episodes[i]),
                           list(names[i]) if ok else None))
        pca[sid] = chosen
    cols = ["setting_id", "label", "method", "episodes"]
    for c in eq.SCORES:
        cols += [c, f"{c}_ci95"]
    t = pd.DataFrame(rows, columns=cols)
    if not t.empty:
        t = _with_setting_columns(merged, t)
    return t, pca


def _fmt_score(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(half) else f"{mean:.3f} +- {half:.3f}"


def embedding_table_view(merged: Merged, emb: pd.DataFrame) -> Table:
    from ..embedding_quality import SCORES

    headers = [h for _, h in merged.shown] + ["method", "episodes"] + [t for t, _ in SCORES.values()]
    rows = []
    for r in emb.itertuples(index=False):
        d = r._asdict()
        rows.append(merged.setting_cells(d["setting_id"]) + [merged.name(d["label"]), str(d["episodes"])]
                    + [_fmt_score(d[c], d[f"{c}_ci95"]) for c in SCORES])
    n = len(merged.shown)
    return Table(headers, rows, merged.setting_align() + "l" + "r" * (1 + len(SCORES)),
                 context=set(range(n)) | {n + 1}, caption=EMBEDDING_CAPTION)


EMBEDDING_CAPTION = ("Embedding quality of the query embeddings, mean +- 95% CI over the saved "
                     "episodes: isotropy (eigen-entropy and partition ratio; 1 is isotropic) and "
                     "class separation (mean silhouette, cosine distance, in [-1, 1]).")
