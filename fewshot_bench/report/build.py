"""`build_report`: load and merge the runs, tabulate, draw, and write the report files in
each output format (`FORMATS`, `parse_formats`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import BenchError
from ..fileio import write_atomic
from .bands import band_table, band_table_view
from .document import _html_report, _markdown_report
from .embeddings import embedding_table, embedding_table_view
from .figures import _figures
from .merge import Merged, display_names, merge_runs
from .paired import paired_results, paired_table_view
from .runs import find_run_dirs, load_run
from .tables import accuracy_table, main_table_view, runs_table_view


FORMATS = ("md", "csv", "latex", "html")


@dataclass
class Report:
    out: Path
    merged: Merged
    accuracy: pd.DataFrame
    paired: pd.DataFrame
    embeddings: pd.DataFrame
    figures: list[Path]  # png and pdf files
    files: list[Path]  # everything written
    notes: list[str]
    text: str


def build_report(run_dirs: Sequence[str | Path], out: str | Path, formats: Sequence[str] = FORMATS,
                 pairs: Sequence[tuple[str, str]] | None = None, title: str | None = None,
                 figures: bool = True, names: dict[str, str] | None = None) -> Report:
    """Load and merge `run_dirs`, tabulate, draw and write the report files into `out`.

    `names`: display names of columns or methods in every table and figure, e.g.
    {"ce": "CE", "schane": "SCHaNe"} (`display_names`); the CSV files keep the labels."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise BenchError(f"Unknown --format {', '.join(unknown) or '(empty)'}; use a comma list of "
                         f"{', '.join(FORMATS)}.")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder.")
    runs = [load_run(p) for p in find_run_dirs(run_dirs)]
    merged = merge_runs(runs)
    merged.names = display_names(merged, names)
    merged.method_names = {k: v for k, v in (names or {}).items()
                           if any(i["method"] == k for i in merged.label_info.values())}
    acc = accuracy_table(merged)
    paired, pair_notes = paired_results(merged, pairs)
    emb, pca = embedding_table(merged)
    bands = band_table(merged)
    notes = merged.notes + pair_notes
    if any(r.embeddings for r in runs) and not all(r.embeddings for r in runs):
        missing = [r.name for r in runs if r.embeddings is None]
        notes.append(f"No embeddings.npz in {', '.join(missing)} (run with --embeddings N to "
                     "score embedding quality).")
    failed = int(acc["failed"].sum())
    if failed:
        notes.append(f"{failed} failed episode(s) are left out of the means (see the cells).")

    main_t = main_table_view(merged, acc)
    paired_t = paired_table_view(merged, paired)
    emb_t = embedding_table_view(merged, emb) if len(emb) else None
    bands_t = band_table_view(merged, bands) if len(bands) else None
    runs_t = runs_table_view(merged)
    title = title or _default_title(merged)

    # Everything is written into a staging folder next to `out` and moved into place at the
    # end (renames need no space), so a full disk or a crash leaves the old report, or none,
    # never half of a new one.
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.report-",
                                      dir=out.resolve().parent))
    except OSError as exc:
        raise BenchError(f"Cannot create the report folder {out} ({exc.strerror}).") from exc
    try:
        figs, fig_files, files = _write_report(stage, merged, acc, paired, pca, emb, bands,
                                               formats, figures, title, notes, main_t,
                                               paired_t, emb_t, bands_t, runs_t)
        moved = {p: out / p.relative_to(stage) for p in files + fig_files}
        for src, dst in moved.items():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files, fig_files = [moved[p] for p in files], [moved[p] for p in fig_files]
    files += fig_files

    text = [title, "", main_t.text()]
    if paired_t.rows:
        text += [paired_t.text()]
    if emb_t is not None:
        text += [emb_t.text()]
    if bands_t is not None:
        text += [bands_t.text()]
    if any(main_t.bold):
        text += ["* best of its row, with a 95% interval that overlaps no other method's.", ""]
    text += [f"note: {n}" for n in notes]
    text += [f"Report in {out}: " + ", ".join(sorted({p.name for p in files if p.parent == out}))
             + (f"; {len(fig_files)} figure files in {out / 'figures'}" if fig_files else "")]
    return Report(out=out, merged=merged, accuracy=acc, paired=paired, embeddings=emb,
                  figures=fig_files, files=files, notes=notes, text="\n".join(text))


def _write_report(dest: Path, merged, acc, paired, pca, emb, bands, formats, figures, title,
                  notes, main_t, paired_t, emb_t, bands_t, runs_t):
    """Write the report's files into `dest`: (figures, figure files, other files)."""
    figs: list[tuple[str, str, Path]] = []
    fig_files: list[Path] = []
    if figures:
        figs = _figures(merged, acc, paired, pca, dest / "figures")
        fig_files = [p for _, _, png in figs for p in (png, png.with_suffix(".pdf"))]

    files: list[Path] = []

    def write(name: str, text: str) -> None:
        write_atomic(dest / name, text)
        files.append(dest / name)

    tables = {"main_table": main_t, "paired_table": paired_t}
    if emb_t is not None:
        tables["embedding_quality"] = emb_t
    if bands_t is not None:
        tables["class_frequency"] = bands_t
    if "md" in formats:
        for name, t in tables.items():
            write(f"{name}.md", t.markdown())
        write("report.md", _markdown_report(title, merged, tables, runs_t, figs, notes, dest))
    if "csv" in formats:
        write("main_table.csv", acc.to_csv(index=False))
        write("paired_table.csv", paired.to_csv(index=False))
        if len(emb):
            write("embedding_quality.csv", emb.to_csv(index=False))
        if len(bands):
            write("class_frequency.csv", bands.to_csv(index=False))
        ep = merged.rows.drop(columns=["loss_curve"]).merge(
            merged.settings[[k for k, _ in merged.shown]], left_on="setting_id", right_index=True)
        write("episodes.csv", ep.to_csv(index=False))
    if "latex" in formats:
        for name, t in tables.items():
            write(f"{name}.tex", t.latex(name))
    if "html" in formats:
        write("report.html", _html_report(title, merged, tables, runs_t, figs, notes))

    return figs, fig_files, files


def _default_title(merged: Merged) -> str:
    n = len(merged.runs)
    return f"fewshot-bench report: {n} run{'s' if n != 1 else ''}, {len(merged.settings)} setting(s)"


def parse_formats(value: str) -> tuple[str, ...]:
    fmts = tuple(f.strip().lower() for f in value.split(",") if f.strip())
    aliases = {"markdown": "md", "tex": "latex"}
    fmts = tuple(aliases.get(f, f) for f in fmts)
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise BenchError(f"Unknown --format {', '.join(unknown) or '(empty)'}; use a comma list of "
                         f"{', '.join(FORMATS)}.")
    return tuple(dict.fromkeys(fmts))
