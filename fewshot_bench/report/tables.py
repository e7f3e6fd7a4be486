"""`Table` (one table, written as Markdown, text, LaTeX or HTML) and the accuracy and runs
tables of a merge."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import analysis
from .fields import SETTING_FIELDS
from .merge import Merged


@dataclass
class Table:
    """A table independent of its output format; `bold` holds (row, column) positions."""

    headers: list[str]
    rows: list[list[str]]
    align: str
    bold: set = field(default_factory=set)

    def markdown(self) -> str:
        def cell(i, j, c):
            c = c.replace("|", "\\|")
            return f"**{c}**" if (i, j) in self.bold else c

        out = ["| " + " | ".join(h.replace("|", "\\|") for h in self.headers) + " |",
               "|" + "|".join(":---" if a == "l" else "---:" for a in self.align) + "|"]
        out += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(r)) + " |"
                for i, r in enumerate(self.rows)]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        rows = [[c + (" *" if (i, j) in self.bold else "") for j, c in enumerate(r)]
                for i, r in enumerate(self.rows)]
        return analysis._text_table(self.headers, rows, self.align) + "\n"

    def latex(self) -> str:
        def cell(i, j, c):
            c = _latex_escape(c)
            return f"\\textbf{{{c}}}" if (i, j) in self.bold else c

        lines = [f"\\begin{{tabular}}{{{self.align}}}", "\\toprule",
                 " & ".join(_latex_escape(h) for h in self.headers) + " \\\\", "\\midrule"]
        lines += [" & ".join(cell(i, j, c) for j, c in enumerate(r)) + " \\\\"
                  for i, r in enumerate(self.rows)]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        def cell(i, j, c):
            c = html.escape(c).replace(" +- ", " ± ")
            return f"<strong>{c}</strong>" if (i, j) in self.bold else c

        al = {"l": "left", "r": "right"}
        head = "".join(f'<th style="text-align:{al[a]}">{html.escape(h)}</th>'
                       for h, a in zip(self.headers, self.align))
        body = "".join(
            "<tr>" + "".join(f'<td style="text-align:{al[a]}">{cell(i, j, c)}</td>'
                             for j, (c, a) in enumerate(zip(r, self.align))) + "</tr>"
            for i, r in enumerate(self.rows))
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody>\n</table>\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def _latex_escape(s: str) -> str:
    s = "".join(_LATEX.get(ch, ch) for ch in s)
    return s.replace(" +- ", r" $\pm$ ")


def accuracy_table(merged: Merged, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (setting, label): the setting's columns, label, method, n, failed, mean,
    ci95, std (percent), accuracy ("62.41 +- 0.83") and best (True where this label has the
    highest mean of its row and its interval overlaps no other label's interval)."""
    out = []
    for sid in merged.settings.index:
        g = merged.rows[merged.rows["setting_id"] == sid]
        if g.empty:
            continue
        df = g[["episode", "label", "accuracy", "status"]].rename(columns={"label": "method"})
        s = analysis.method_summary(df, confidence).rename(columns={"method": "label"})
        s["best"] = False
        ok = s[(s["n"] > 1) & np.isfinite(s["ci95"])]
        if len(s) > 1 and len(ok) == len(s):
            i = ok["mean"].idxmax()
            low = ok.loc[i, "mean"] - ok.loc[i, "ci95"]
            others = ok.drop(index=i)
            if (low > others["mean"] + others["ci95"]).all():
                s.loc[i, "best"] = True
        s.insert(0, "setting_id", sid)
        s.insert(2, "method", s["label"].map(lambda lb: merged.label_info[lb]["method"]))
        out.append(s)
    t = pd.concat(out, ignore_index=True)
    t["_order"] = t["label"].map(merged.labels.index)
    t = t.sort_values(["setting_id", "_order"]).drop(columns="_order").reset_index(drop=True)
    return _with_setting_columns(merged, t)


def _with_setting_columns(merged: Merged, t: pd.DataFrame) -> pd.DataFrame:
    """Prefix a per-setting table with every setting field (CSV readers filter on them)."""
    cols = [k for k, _ in SETTING_FIELDS] + ["episodes_key", "content_hash"]
    left = merged.settings[cols].rename(columns={"content_hash": "episodes_hash"})
    t = t.merge(left, left_on="setting_id", right_index=True, how="left")
    front = ["setting_id"] + cols[:-1] + ["episodes_hash"]
    return t[front + [c for c in t.columns if c not in front]]


def main_table_view(merged: Merged, acc: pd.DataFrame) -> Table:
    """Rows: settings; columns: labels; cells "62.41 +- 0.83", best bold."""
    labels = [lb for lb in merged.labels if lb in set(acc["label"])]
    headers = [h for _, h in merged.shown] + labels
    rows, bold = [], set()
    for i, sid in enumerate(pd.unique(acc["setting_id"])):
        g = acc[acc["setting_id"] == sid].set_index("label")
        cells = merged.setting_cells(sid)
        for lb in labels:
            if lb not in g.index:
                cells.append("-")
                continue
            r = g.loc[lb]
            c = r["accuracy"] + (f" ({int(r['failed'])} failed)" if r["failed"] else "")
            if r["best"]:
                bold.add((i, len(cells)))
            cells.append(c)
        rows.append(cells)
    align = merged.setting_align() + "r" * len(labels)
    return Table(headers, rows, align, bold)


def runs_table_view(merged: Merged) -> Table:
    headers = ["run", "setting", "episode file", "content hash", "columns", "finished", "git commit"]
    rows = []
    for r in merged.runs:
        cols = [e.label for e in merged.entries if e.run is r]
        git = (r.record.get("git") or {})
        commit = (git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
        sid = next((e.setting_id for e in merged.entries if e.run is r), None)
        rows.append([str(r.path), merged.settings.loc[sid, "title"] if sid is not None else "-",
                     r.episodes_key, r.content_hash[:12], ", ".join(cols) or "(all repeated)",
                     "yes" if r.finished else "no", commit])
    return Table(headers, rows, "lllllll")
