"""The Markdown and the self-contained HTML report pages: sections, blurbs, tables, figures
and notes."""

from __future__ import annotations

import base64
import html
from pathlib import Path


_SCORE_DEFINITIONS = (
    "isotropy (eigen-entropy): exp(H) / min(n-1, D), H the entropy of the centred covariance's "
    "normalised eigenvalues (1: variance spread evenly; about 0: one direction). "
    "isotropy (partition ratio): min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c.x_i), c over the "
    "+-eigenvectors of X^T X (Mu & Viswanath 2018; uncentred; at least e^-2 = 0.135 for unit "
    "vectors). class separation: mean silhouette with cosine distance, in [-1, 1]. "
    "Each is computed per saved episode on its N*Q query embeddings and averaged over episodes "
    "(+- 95% CI)."
)


_SECTIONS = (
    ("accuracy", "Accuracy", "main_table",
     "Mean accuracy (%) over episodes +- the 95% confidence interval t_{0.975,n-1} s / sqrt(n). "
     "**Bold**: the best method of its row whose interval overlaps no other method's."),
    ("paired", "Paired comparisons", "paired_table",
     "Per-episode differences b - a on the same episodes (percentage points): mean +- 95% CI, "
     "paired t-test and Wilcoxon signed-rank p-values, episodes won / tied / lost by b."),
    ("bands", "Accuracy by class frequency", "class_frequency",
     "Imbalanced episodes (--shots-dist): per episode, the mean accuracy of the queries of the "
     "classes whose number of support images falls in the band; mean +- 95% CI over the "
     "episodes that have such a class."),
    ("loss", "Fine-tuning loss", None, ""),
    ("hyper", "Hyperparameters", None, ""),
    ("embeddings", "Embedding quality", "embedding_quality", _SCORE_DEFINITIONS),
)


def _sections(tables, figs):
    """(heading, blurb, table or None, [(caption, png)]) of each section with content."""
    for key, heading, name, blurb in _SECTIONS:
        table = tables[name] if name in tables and tables[name].rows else None
        sec_figs = [(c, p) for k, c, p in figs if k == key]
        if table is not None or sec_figs:
            yield heading, blurb, table, sec_figs


def _markdown_report(title, merged, tables, runs_t, figs, notes, out: Path) -> str:
    parts = [f"# {title}\n"]
    for heading, blurb, table, sec_figs in _sections(tables, figs):
        parts.append(f"## {heading}\n")
        if blurb:
            parts.append(blurb + "\n")
        if table is not None:
            parts.append(table.markdown())
        for caption, png in sec_figs:
            parts.append(f"![{caption}]({png.relative_to(out).as_posix()})\n\n*{caption}* "
                         f"([PDF]({png.with_suffix('.pdf').relative_to(out).as_posix()}))\n")
    parts.append("## Runs\n")
    parts.append(runs_t.markdown())
    if notes:
        parts.append("## Notes\n")
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #ddd}
th{background:#f4f4f4}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:14px;color:#555}
.note{color:#8a4b00}"""


def _html_report(title, merged, tables, runs_t, figs, notes) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"]
    for heading, blurb, table, sec_figs in _sections(tables, figs):
        parts.append(f"<h2>{html.escape(heading)}</h2>\n")
        if blurb:
            parts.append(f"<p>{html.escape(blurb.replace('**', ''))}</p>\n")
        if table is not None:
            parts.append(table.html())
        for caption, png in sec_figs:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>\n")
    parts.append("<h2>Runs</h2>\n" + runs_t.html())
    if notes:
        parts.append("<h2>Notes</h2>\n<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes)
                     + "</ul>\n")
    parts.append("</body></html>\n")
    return "".join(parts)
