"""`Table` (one table, written as Markdown, text or LaTeX; the HTML page renders it in its
Jinja2 template) and the accuracy and runs tables of a merge."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import analysis
from .fields import SETTING_FIELDS
from .merge import Merged


@dataclass
class Table:
    """A table independent of its output format; `bold` holds (row, column) positions.

    `context`: the columns that describe a row's setting (data set, backbone, ...); the
    LaTeX table moves those with one value in every row into its caption. `caption`: what
    the table shows, in a sentence or two (LaTeX caption; plain text, "+-" for ±)."""

    headers: list[str]
    rows: list[list[str]]
    align: str
    bold: set = field(default_factory=set)
    context: set = field(default_factory=set)
    caption: str = ""

    def markdown(self) -> str:
        def cell(i, j, c):
            c = _minus(c).replace("|", "\\|")
            return f"**{c}**" if (i, j) in self.bold else c

        out = ["| " + " | ".join(_minus(h).replace("|", "\\|") for h in self.headers) + " |",
               "|" + "|".join(":---" if a == "l" else "---:" for a in self.align) + "|"]
        out += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(r)) + " |"
                for i, r in enumerate(self.rows)]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        rows = [[c + (" *" if (i, j) in self.bold else "") for j, c in enumerate(r)]
                for i, r in enumerate(self.rows)]
        return analysis._text_table(self.headers, rows, self.align) + "\n"

    def constant_context(self) -> list[int]:
        """The context columns with the same value in every row (the LaTeX caption's)."""
        return [j for j in sorted(self.context)
                if self.rows and len({r[j] for r in self.rows}) == 1]

    def latex(self, name: str = "table") -> str:
        """A booktabs `table` float: constant context columns in the caption, long headers
        on several lines, `$-$` and `$\\pm$` for minus and plus-minus, set in \\small.
        The header comment names the packages it needs and its estimated width."""
        moved = self.constant_context()
        keep = [j for j in range(len(self.headers)) if j not in moved]
        fixed = "; ".join(f"{self.headers[j]}: {self.rows[0][j]}" for j in moved)
        caption = " ".join(filter(None, [self.caption, fixed + "." if fixed else ""]))
        head = [_wrap_header(self.headers[j], max((len(r[j]) for r in self.rows), default=0))
                for j in keep]
        body = [[r[j] for j in keep] for r in self.rows]
        width = latex_width_pt(head, body)

        def cell(i, j, c):
            c = _latex_cell(c)
            return f"\\textbf{{{c}}}" if (i, j) in self.bold else c

        def header(lines, a):
            if len(lines) == 1:
                return _latex_cell(lines[0])
            inner = "\\\\".join(_latex_cell(x) for x in lines)
            return f"\\begin{{tabular}}[b]{{@{{}}{a}@{{}}}}{inner}\\end{{tabular}}"

        align = "".join(self.align[j] for j in keep)
        lines = [f"% {name}.tex, written by `bench report` (fewshot-bench).",
                 "% Needs \\usepackage{booktabs} in the preamble (\\toprule, \\midrule, \\bottomrule);",
                 "% no other package. Estimated width at \\small: "
                 f"{width:.0f} pt (article column 345 pt, two-column paper 240 pt).",
                 "\\begin{table}[htbp]", "\\centering", "\\small"]
        if caption:
            lines.append(f"\\caption{{{_latex_cell(caption)}}}")
        lines += [f"\\label{{tab:{name.replace('_', '-')}}}",
                  f"\\begin{{tabular}}{{@{{}}{align}@{{}}}}", "\\toprule",
                  " & ".join(header(h, a) for h, a in zip(head, align)) + " \\\\", "\\midrule"]
        lines += [" & ".join(cell(i, j, c) for j, c in zip(keep, (r[j] for j in keep))) + " \\\\"
                  for i, r in enumerate(self.rows)]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


# A hyphen that is a minus sign: before a number ("-0.00", "=-1"), or alone between spaces
# ("schane - ce", "b - a"); not inside words or ranges ("tiered-imagenet", "1-5", "1e-4").
_MINUS = re.compile(r"(?<![\w.)\]])-(?=\.?\d)|(?<=\s)-(?=\s)")


def _minus(s: str) -> str:
    """`s` with its minus signs as U+2212 (Markdown, HTML)."""
    return _MINUS.sub("\u2212", s)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
          "<": "$<$", ">": "$>$", "|": "$|$", "\u2212": "$-$", "±": r"$\pm$"}


def _latex_escape(s: str) -> str:
    s = "".join(_LATEX.get(ch, ch) for ch in s)
    return s.replace(" +- ", r" $\pm$ ")


def _latex_cell(s: str) -> str:
    """Escaped LaTeX text with real minus signs and p-values such as <1e-4 as $<10^{-4}$."""
    s = _latex_escape(_minus(s))
    return re.sub(r"\$<\$1e-(\d+)", r"$<10^{-\1}$", s)


# Estimated widths (pt) at 10 pt Computer Modern: about 5 pt a character, 7.8 pt for a math
# symbol ($\pm$, $-$, $<$), and 2 \tabcolsep = 12 pt between columns (@{} drops the outer ones).
_CHAR_PT, _SYMBOL_PT, _COLSEP_PT, _SMALL = 5.0, 7.8, 12.0, 0.9


def _text_pt(s: str) -> float:
    symbols = s.count("+-") + len(_MINUS.findall(s)) + s.count("<") + s.count(">")
    chars = len(s) - 2 * s.count("+-") - symbols
    return _CHAR_PT * chars + _SYMBOL_PT * symbols


def latex_width_pt(headers: list[list[str]], rows: list[list[str]], scale: float = _SMALL) -> float:
    """Estimated width of a LaTeX table whose header cells are given as their lines."""
    cols = [max([_text_pt(x) for x in h] + [_text_pt(r[j]) for r in rows]) for j, h in enumerate(headers)]
    return scale * sum(cols) + _COLSEP_PT * max(len(cols) - 1, 0)


def _wrap_header(h: str, cell_chars: int) -> list[str]:
    """`h` on as few lines as fit the column's widest cell (at least 6 characters), when it
    is longer, the lines as even as possible: breaks at spaces, inside a word too long for a
    line after "/" or "-", never after a lone "-" ("b - a")."""
    width = max(cell_chars, 6)
    if len(h) <= width:
        return [h]
    tokens: list[tuple[str, str]] = []  # (text, glue before it)
    for w in h.split():
        if w == "-" or (tokens and tokens[-1][0].endswith(" -")):
            if tokens:
                tokens[-1] = (tokens[-1][0] + " " + w, tokens[-1][1])
                continue
        parts = re.findall(r"[^/-]+[/-]?|[/-]", w) if len(w) > width else [w]
        tokens += [(p, "" if k else " ") for k, p in enumerate(parts)]

    def greedy(limit: int) -> list[str]:
        lines, cur = [], ""
        for w, glue in tokens:
            if cur and len(cur) + len(glue) + len(w) > limit:
                lines.append(cur)
                cur = w
            else:
                cur += (glue if cur else "") + w
        return lines + [cur] if cur else lines

    best = greedy(width)
    for limit in range(max(len(t) for t, _ in tokens), width):
        lines = greedy(limit)
        if len(lines) <= len(best):
            return lines
    return best


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
    headers = [h for _, h in merged.shown] + [merged.name(lb) for lb in labels]
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
    return Table(headers, rows, align, bold, context=set(range(len(merged.shown))),
                 caption=MAIN_CAPTION)


MAIN_CAPTION = ("Accuracy (%) on the query images: mean over episodes +- the 95% confidence "
                "interval. Bold: the best of its row, its interval overlapping no other method's.")


def runs_table_view(merged: Merged) -> Table:
    headers = ["run", "setting", "episode file", "content hash", "columns", "finished", "git commit"]
    rows = []
    for r in merged.runs:
        cols = [merged.name(e.label) for e in merged.entries if e.run is r]
        git = (r.record.get("git") or {})
        commit = (git.get("commit") or "-")[:10] + (" (dirty)" if git.get("dirty") else "")
        sid = next((e.setting_id for e in merged.entries if e.run is r), None)
        rows.append([str(r.path), merged.settings.loc[sid, "title"] if sid is not None else "-",
                     r.episodes_key, r.content_hash[:12], ", ".join(cols) or "(all repeated)",
                     "yes" if r.finished else "no", commit])
    return Table(headers, rows, "lllllll")
