"""The Markdown and the self-contained HTML report pages: sections, blurbs, tables, figures
and notes."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

from .tables import _minus


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


def _html_report(title, merged, tables, runs_t, figs, notes) -> str:
    """The self-contained HTML page (templates/report.html.j2)."""
    sections = [{"heading": heading, "blurb": blurb.replace("**", ""), "table": table,
                 "figures": [{"caption": c, "data": base64.b64encode(p.read_bytes()).decode("ascii")}
                             for c, p in sec_figs]}
                for heading, blurb, table, sec_figs in _sections(tables, figs)]
    return _template().render(title=title, sections=sections, runs=runs_t, notes=notes)


@functools.lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("fewshot_bench.report", "templates"),
                             autoescape=True, trim_blocks=False, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["minus"] = _minus
    env.filters["cell"] = lambda c: _minus(c).replace(" +- ", " ± ")
    env.globals["ALIGN"] = {"l": "left", "r": "right"}
    return env.get_template("report.html.j2")
