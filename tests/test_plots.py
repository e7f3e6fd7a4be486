"""Every figure of `bench report` is written as a non-empty PNG and PDF and shows up in the
reports; the plot functions survive degenerate inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

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
    names = [["grinning face", "red heart", "thumbs up", "fire", "party popper"]] * 2
    runs = [write_run(root / "s1", {m: accuracies(40, 0.5 + 0.02 * i, i) for i, m in enumerate(methods)},
                      shots=1, queries=3, curves=6, embeddings=emb, class_names=names)]
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


def test_png_figures_are_300_dpi(full_report):
    rep, out = full_report
    for p in (f for f in rep.figures if f.suffix == ".png"):
        with Image.open(p) as im:
            dpi = im.info.get("dpi")
            size = im.size
        assert dpi is not None and dpi == pytest.approx((300, 300), abs=0.5), (p.name, dpi)
        assert min(size) >= 3 * 300, (p.name, size)  # every figure is at least 3 in on a side


def test_loss_curves_give_each_method_its_own_panel_and_axis():
    rng = np.random.default_rng(0)
    steps = np.arange(10)
    ce = 0.05 + 0.6 * 0.5 ** steps + 0.002 * rng.standard_normal((8, 10))
    schane = 3.0 + 0.8 * 0.7 ** steps + 0.02 * rng.standard_normal((8, 10))
    colors = plots.label_colors(["CE", "SCHaNe"], {"CE": "ce", "SCHaNe": "schane"})
    fig = plots.loss_curves_figure([("emoji, 5-shot", {"CE": ce, "SCHaNe": schane})], colors,
                                   methods={"CE": "CE", "SCHaNe": "SCHaNe"})
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    by_title = {ax.get_title().split(":")[0]: ax for ax in axes}
    lo, hi = by_title["CE"].get_ylim()
    assert hi < 1.0 and hi - lo < 1.0  # CE's own scale: its decrease fills the panel
    lo, hi = by_title["SCHaNe"].get_ylim()
    assert lo > 2.5
    # two settings, two methods: four panels
    fig = plots.loss_curves_figure([("a", {"ce": ce, "schane": schane}), ("b", {"ce": ce, "schane": schane})],
                                   colors)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4


def test_tied_episodes_are_visible_on_the_diagonal():
    xa = np.array([60.0, 60.0, 60.0, 60.0, 40.0, 50.0, 70.0])
    xb = np.array([60.0, 60.0, 60.0, 60.0, 40.0, 52.0, 66.0])
    panel = plots.PairPanel("ties", "ce", "schane", xa, xb, -0.3, 1.0, 1, 5, 1)
    colors = plots.label_colors(["ce", "schane"], {"ce": "ce", "schane": "schane"})
    ax = plots.paired_scatter_figure([panel], colors).axes[0]
    ties = next(c for c in ax.collections if c.get_label().startswith("tie: 5"))
    diagonal = next(ln for ln in ax.lines if "y = x" in ln.get_label())
    assert ties.get_zorder() > diagonal.get_zorder()  # drawn over the diagonal
    assert ties.get_alpha() >= 0.9
    r, g, b, _ = ties.get_facecolor()[0]
    assert max(r, g, b) < 0.3  # dark, not the pale grey of before
    offsets = np.asarray(ties.get_offsets())
    assert sorted(map(tuple, offsets)) == [(40.0, 40.0), (60.0, 60.0)]  # unjittered, on y = x
    sizes = dict(zip(offsets[:, 0], ties.get_sizes()))
    assert sizes[60.0] > sizes[40.0]  # four tied episodes at 60%, one at 40%
    assert any(t.get_text().startswith("tie: 5") for t in ax.get_legend().get_texts())


def test_pca_legend_names_the_classes(full_report):
    x = clustered(1, 3, 4, 8, 0.1, 0)[0]
    y = np.repeat(np.arange(3), 4)
    fig = plots.embeddings_pca_figure([("ce", x, y, {})], "t", class_names=["cat", "dog", "owl"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["cat", "dog", "owl"]
    fig = plots.embeddings_pca_figure([("ce", x, y, {})], "t")  # older runs: no names saved
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 0", "class 1", "class 2"]
    # the report passes the names the run saved
    from fewshot_bench.report import embedding_table, load_run, merge_runs

    rep, out = full_report
    _, pca = embedding_table(rep.merged)
    (items,) = pca.values()
    assert all(it[4] == ["grinning face", "red heart", "thumbs up", "fire", "party popper"] for it in items)
