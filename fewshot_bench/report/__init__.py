"""`bench report`: merge run folders into comparison tables, figures and a report.

A run folder (written by `bench run`) holds run.json (configuration, episode file and its
content hash), episodes.jsonl (one row per episode and method) and, with `--embeddings N`,
embeddings.npz. This package:

1. loads the folders (`load_run`; a folder of run folders is expanded);
2. merges them (`merge_runs`): every (run, method) becomes a column *label*. A label is the
   method name plus the hyperparameters that matter to that method and differ between the
   merged runs, e.g. `schane(lambda=0.5)`; every run becomes a *setting* row: data set,
   backbone, ways, shots, ... and the episode file's content hash;
3. tabulates (`accuracy_table`, `paired_results`, `embedding_table`) with the statistics of
   `analysis` (mean with t-interval, paired t-test, Wilcoxon, wins/ties/losses);
4. draws the figures (`plots`, 300-dpi PNG and PDF) and writes Markdown, CSV, booktabs
   LaTeX and a self-contained HTML report (`build_report`); `names` (`--label`) gives the
   labels display names in every table and figure (docs/output.md).

Pairing rule. Two labels are compared episode by episode only when they were scored on the
same episode file (same content hash): methods of one run always are, methods of different
runs are when their episode hashes agree. Runs whose files differ land on separate rows
and are never paired: by default the report notes each comparison it therefore could not
make; a comparison asked for explicitly with `--pair A B` is refused (BenchError, exit 2).

Modules: `fields` (the configuration fields of settings and labels), `runs` (loading),
`merge` (settings, labels and their display names), `tables` (`Table`, accuracy and runs
tables), `paired` (paired comparisons), `embeddings` (embedding quality), `figures`,
`document` (the Markdown page, and the HTML page from templates/report.html.j2) and
`build` (`build_report`, the formats).
"""

from __future__ import annotations

from .build import FORMATS, Report, build_report, parse_formats
from .embeddings import embedding_table
from .merge import Merged, merge_runs
from .paired import default_pairs, paired_results
from .runs import Run, find_run_dirs, load_run
from .tables import Table, accuracy_table

__all__ = [
    "FORMATS",
    "Run",
    "Merged",
    "Report",
    "Table",
    "find_run_dirs",
    "load_run",
    "merge_runs",
    "accuracy_table",
    "paired_results",
    "embedding_table",
    "build_report",
    "default_pairs",
    "parse_formats",
]
