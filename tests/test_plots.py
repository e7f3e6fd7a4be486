"""Every figure of `bench report` is written as a non-empty PNG and PDF and shows up in the
reports; the plot functions survive degenerate inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fake_runs import accuracies, clustered, write_run
from fewshot_bench import plots
from fewshot_bench.report import build_report

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Two settings (1-shot, 5-shot), the 5-shot one with a lambda sweep over three runs,
    loss curves and saved embeddings: every kind of figure."""
    root = tmp_path_factory.mktemp("plots")
    methods = ("protonet", "ce", "schane")
    emb = {m: clustered(2, 5, 3, 24, 0.4 + 0.2 * i, i) for i, m in enumerate(methods)}
    runs = [write_run(root / "s1", {m: accuracies(40, 0.5 + 0.02 * i, i) for i, m in enumerate(methods)},
                      shots=1, queries=3, curves=6, embeddings=emb)]
    ce = accuracies(40, 0.7, 7)
    for lam in (0.5, 0.9):
        runs.append(write_run(root / f"s5-lam{lam}", {"ce": ce, "schane": accuracies(40, 0.7 + lam / 20, 8)},
                              shots=5, queries=3, curves=6, lam=lam))
    rep = build_report(runs, root / "report", ["md", "html"])
    return rep, root / "report"


def test_every_figure_is_written_as_png_and_pdf(full_report):
    rep, out = full_report
    names = sorted(p.name for p in (out / "figures").iterdir())
    stems = {n.rsplit(".", 1)[0] for n in names}
    expected = {"accuracy", "paired_scatter", "paired_differences", "loss_curves", "hyperparameters"}
    assert expected <= stems
    assert any(s.startswith("embeddings_pca_") for s in stems)
    assert sorted(names) == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "pdf"))
    assert sorted(p.name for p in rep.figures) == names
    for name in names:
        data = (out / "figures" / name).read_bytes()
        assert len(data) > 5000, name
        assert data.startswith(PNG if name.endswith(".png") else b"%PDF"), name


def test_figures_appear_in_both_reports(full_report):
    rep, out = full_report
    pngs = [p for p in rep.figures if p.suffix == ".png"]
    md = (out / "report.md").read_text()
    for p in pngs:
        assert f"(figures/{p.name})" in md
        assert f"(figures/{p.with_suffix('.pdf').name})" in md
    page = (out / "report.html").read_text()  # one file: every image inline
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_paired_figures_show_every_ce_vs_schane_pair(full_report):
    rep, _ = full_report
    # 1-shot: ce vs schane; 5-shot: ce vs both lambdas
    pairs = [(r.a, r.b) for r in rep.paired.itertuples() if r.a == "ce"]
    assert pairs == [("ce", "schane(lambda=0.9)"), ("ce", "schane(lambda=0.5)"), ("ce", "schane(lambda=0.9)")]


def test_plot_functions_survive_degenerate_inputs(tmp_path):
    colors = plots.label_colors(["ce", "schane"], {"ce": "ce", "schane": "schane"})
    same = np.full(5, 60.0)
    tie = plots.PairPanel("all ties", "ce", "schane", same, same, 0.0, 0.0, 0, 5, 0)
    one = plots.PairPanel("one episode", "ce", "schane", np.array([40.0]), np.array([60.0]),
                          20.0, float("nan"), 1, 0, 0)
    files = plots.plot_paired_scatter([tie, one], colors, tmp_path / "scatter")
    files += plots.plot_differences([tie, one], colors, tmp_path / "diff")
    curves = {"ce": np.array([[1.0, 0.5, np.nan]]), "schane": np.array([[np.nan, np.nan, np.nan], [2.0, 1.0, 0.5]])}
    files += plots.plot_loss_curves([("curves with gaps", curves)], colors, tmp_path / "loss")
    files += plots.plot_hyperparameter(
        [("tau", [("schane", [0.05, 0.1, 0.5], [50.0, 52.0, 51.0], [1.0, float("nan"), 1.2])],
          [("ce", 50.5, float("nan"))])], tmp_path / "hp")
    x = clustered(1, 2, 1, 8, 0.1, 0)[0]  # two points: one principal component
    files += plots.plot_embeddings_pca([("ce", x, np.array([0, 1]), {})], "two points", tmp_path / "pca")
    assert len(files) == 10 and all(p.stat().st_size > 1000 for p in files)


def test_label_colours_are_distinct_within_a_sweep():
    labels = ["protonet", "ce", "schane(lambda=0.2)", "schane(lambda=0.5)", "schane(lambda=0.9)", "supcon"]
    methods = {lb: lb.split("(")[0] for lb in labels}
    colors = plots.label_colors(labels, methods)
    assert len(set(colors.values())) == len(labels)
