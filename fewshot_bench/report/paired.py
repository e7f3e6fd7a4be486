"""Paired comparisons: which labels are compared (`default_pairs`, `resolve_label`) and their
per-episode differences and tests within each setting (`paired_results`), under the
pairing rule of the package docstring."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import analysis
from ..analysis import _paired_rows
from ..config import CONTRASTIVE
from ..errors import BenchError
from .fields import SETTING_FIELDS, TRAIN_FIELDS, WEIGHTS_FIELD, _train_key
from .merge import Merged
from .tables import Table, _with_setting_columns


def default_pairs(labels: Sequence[str], info: dict[str, dict]) -> list[tuple[str, str]]:
    """On the same network weights: CE against every SCHaNe-like label trained the same way
    (same steps, lr, ...), SCHaNe against its per-positive form and against detached
    weights; then one method on the pretrained against the fine-tuned weights; then every
    label against the ProtoNet reference on its weights. (a, b) reads "b - a"."""
    def same_net(a: str, b: str) -> bool:
        return info[a].get(WEIGHTS_FIELD) == info[b].get(WEIGHTS_FIELD)

    pairs = []
    ce = [lb for lb in labels if info[lb]["method"] == "ce"]
    other = [lb for lb in labels if info[lb]["method"] in CONTRASTIVE]
    pairs += [(a, b) for a in ce for b in other
              if _train_key(info[a]) == _train_key(info[b]) and same_net(a, b)]
    same = ("lam", "tau", "beta", WEIGHTS_FIELD) + TRAIN_FIELDS + ("device",)
    for first, second in (("schane-perpos", "schane"), ("schane", "schane-detached")):
        pairs += [(a, b) for a in labels if info[a]["method"] == first
                  for b in labels if info[b]["method"] == second
                  and all(repr(info[a].get(f)) == repr(info[b].get(f)) for f in same)]
    # one method on other weights, all else equal: the pretrained network against each
    # fine-tuned one, then the fine-tuned ones against each other (bench transfer)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            ia, ib = info[a], info[b]
            if (ia["method"] == ib["method"] and not same_net(a, b)
                    and all(repr(ia.get(f)) == repr(ib.get(f)) for f in ia if f != WEIGHTS_FIELD)):
                first = ib[WEIGHTS_FIELD] == "pretrained"
                pairs.append((b, a) if first else (a, b))
    for p in (lb for lb in labels if info[lb]["method"] == "protonet"):
        pairs += [(p, x) for x in labels if info[x]["method"] != "protonet" and same_net(p, x)]
    return pairs


def resolve_label(merged: Merged, name: str) -> str:
    """An exact label, a display name (`--label`), or a method name that has exactly one label."""
    if name in merged.label_info:
        return name
    shown = [lb for lb in merged.labels if merged.name(lb) == name]
    if shown:
        return shown[0]
    matches = [lb for lb, i in merged.label_info.items() if i["method"] == name]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(merged.labels)
    if matches:
        raise BenchError(f"--pair {name!r} is ambiguous: the runs hold {', '.join(matches)}. "
                         "Name one of them (quote it in the shell).")
    raise BenchError(f"--pair names {name!r}, which no run holds. Labels: {known}.")


def _group_key(merged: Merged, sid: int) -> tuple:
    s = merged.settings.loc[sid]
    return tuple(repr(s[k]) for k, _ in SETTING_FIELDS)


def _mismatch_message(merged: Merged, a: str, b: str, sids_a, sids_b) -> str:
    def where(label, sids):
        parts = []
        for sid in sids:
            s = merged.settings.loc[sid]
            parts.append(f"{', '.join(merged.runs_of(label, sid))}: {s['episodes_key']} "
                         f"#{s['content_hash'][:12]}")
        return "; ".join(parts)

    key_a = {merged.settings.loc[s, "episodes_key"] for s in sids_a}
    key_b = {merged.settings.loc[s, "episodes_key"] for s in sids_b}
    why = (" The files have the same name but different contents (the episode file or the data "
           "set changed between the runs)." if key_a & key_b else "")
    title = merged.settings.loc[next(iter(sids_a)), "title_no_file"]
    return (f"{a} and {b} ({title}) were scored on different episode files ({a} in {where(a, sids_a)}; "
            f"{b} in {where(b, sids_b)}), so their episodes do not correspond and they cannot be "
            f"paired.{why}")


def paired_results(merged: Merged, pairs: Sequence[tuple[str, str]] | None = None,
                   confidence: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """Paired comparisons (analysis.paired_comparison) of label pairs within each setting.

    `pairs`: explicit (a, b) label or method names; None: `default_pairs` per setting.
    Pairs whose labels were scored on different episode files are refused when explicit
    (BenchError) and noted otherwise. Returns (table, notes).
    """
    notes: list[str] = []
    explicit = None
    if pairs:
        explicit = []
        for a, b in pairs:
            ra, rb = resolve_label(merged, a), resolve_label(merged, b)
            if ra == rb:
                raise BenchError(f"--pair {a} {b} names the same column twice.")
            explicit.append((ra, rb))

    present = {sid: [e.label for e in merged.entries_of(sid)] for sid in merged.settings.index}
    # pairs across episode files of otherwise equal settings
    groups: dict[tuple, list[int]] = {}
    for sid in merged.settings.index:
        groups.setdefault(_group_key(merged, sid), []).append(sid)
    for sids in groups.values():
        union = [lb for lb in merged.labels if any(lb in present[s] for s in sids)]
        wanted = explicit if explicit is not None else default_pairs(union, merged.label_info)
        for a, b in wanted:
            sa = [s for s in sids if a in present[s]]
            sb = [s for s in sids if b in present[s]]
            if sa and sb and not set(sa) & set(sb):
                msg = _mismatch_message(merged, a, b, sa, sb)
                if explicit is not None:
                    raise BenchError(msg + " Re-run both methods on the same episode file "
                                     "(same --episodes-dir, --seed, --episodes), or drop --pair to "
                                     "report them side by side, unpaired.")
                notes.append(msg + " They are reported unpaired.")
    if explicit is not None:
        for a, b in explicit:
            if not any(a in p and b in p for p in present.values()):
                if not any(any(a in present[s] for s in sids) and any(b in present[s] for s in sids)
                           for sids in groups.values()):
                    raise BenchError(f"--pair {a} {b}: these were never run in the same setting "
                                     "(data set, backbone, ways, shots, ...), so there is nothing to pair.")

    cols = ["a", "b", "n", "mean_diff", "ci95", "t_stat", "t_p", "wilcoxon_p",
            "wins", "ties", "losses", "a_only", "b_only"]
    out = []
    for sid in merged.settings.index:
        labels = present[sid]
        todo = [(a, b) for a, b in (explicit if explicit is not None else default_pairs(labels, merged.label_info))
                if a in labels and b in labels]
        if not todo:
            continue
        g = merged.rows[merged.rows["setting_id"] == sid]
        df = g[["episode", "label", "accuracy", "status"]].rename(columns={"label": "method"})
        for a, b in todo:
            try:
                r = analysis.paired_comparison(df, a, b, confidence)
            except BenchError as exc:
                notes.append(f"{merged.settings.loc[sid, 'title']}: {exc}")
                continue
            out.append({"setting_id": sid, **r})
    t = pd.DataFrame(out, columns=["setting_id"] + cols)
    return _with_setting_columns(merged, t), notes


def paired_table_view(merged: Merged, paired: pd.DataFrame) -> Table:
    headers = [h for _, h in merged.shown]
    rows, align = [], merged.setting_align()
    for sid in pd.unique(paired["setting_id"]):
        g = paired[paired["setting_id"] == sid]
        h, body, al = _paired_rows(g.assign(a=g["a"].map(merged.name), b=g["b"].map(merged.name)))
        rows += [merged.setting_cells(sid) + r for r in body]
        headers_out, align_out = headers + h, align + al
    if not rows:
        return Table(headers + ["comparison (b - a)"], [], align + "l", caption=PAIRED_CAPTION)
    # the setting columns and the number of episodes go to the LaTeX caption when constant
    context = set(range(len(headers))) | {len(headers) + 1}
    return Table(headers_out, rows, align_out, context=context, caption=PAIRED_CAPTION)


PAIRED_CAPTION = ("Paired comparisons on the same episodes: the per-episode difference b - a "
                  "in percentage points, mean +- 95% CI; p-values of the paired t-test and of "
                  "the Wilcoxon signed-rank test; episodes won, tied and lost by b.")
