"""Accuracy by class frequency for runs on imbalanced episodes (`bench run --shots-dist`):
per (setting, label), each frequency band's accuracy as in the run's own bands.csv."""

from __future__ import annotations

import pandas as pd

from .. import analysis
from ..shots import parse_shots_dist
from .merge import Merged
from .tables import Table, _with_setting_columns


def band_table(merged: Merged) -> pd.DataFrame:
    """One row per (setting, label, band) of the runs made with a shots distribution:
    the setting columns, label, method, band, band_shots, episodes, classes, mean, ci95
    (percent)."""
    frames = []
    for e in merged.entries:
        dist = e.run.config.get("shots_dist")
        rows = e.run.rows[e.run.rows["method"] == e.method]
        if not dist or "class_shots" not in rows:
            continue
        # the band's shot range; "shots" is the setting's (the distribution) in this table
        t = analysis.band_summary(rows, parse_shots_dist(dist)).rename(columns={"shots": "band_shots"})
        t.insert(0, "label", e.label)
        t.insert(0, "setting_id", e.setting_id)
        frames.append(t)
    if not frames:
        return pd.DataFrame()
    return _with_setting_columns(merged, pd.concat(frames, ignore_index=True))


def band_table_view(merged: Merged, bands: pd.DataFrame) -> Table:
    headers = [h for _, h in merged.shown] + ["method", "class frequency", "episodes",
                                              "accuracy % (95% CI)"]
    rows = [merged.setting_cells(r.setting_id)
            + [merged.name(r.label), r.band, str(r.episodes), analysis._fmt_acc(r.mean, r.ci95)]
            for r in bands.itertuples(index=False)]
    return Table(headers, rows, merged.setting_align() + "llrr",
                 context=set(range(len(merged.shown))), caption=BANDS_CAPTION)


BANDS_CAPTION = ("Accuracy (%) by class frequency on imbalanced episodes: per band of support "
                 "images per class, mean +- 95% CI over the episodes that have such a class.")
