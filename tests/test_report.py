"""`bench report`: merged tables against scipy, pairing rules, labels, outputs, errors.

Run folders are written directly by tests/fake_runs.py (milliseconds); one test runs a
tiny real `bench run` and reports it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fake_runs import accuracies, clustered, write_run
from fewshot_bench.errors import BenchError
from fewshot_bench.report import build_report, find_run_dirs, load_run, merge_runs, paired_results
from cli_helpers import invoke, explain






def ci(x: np.ndarray) -> float:
    """The 95% half width computed directly with scipy."""
    return float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x)))


# --------------------------------------------------------------------------------------
# Statistics equal scipy's on the same numbers
# --------------------------------------------------------------------------------------


@pytest.fixture
def three_methods(tmp_path):
    n = 120
    pn = accuracies(n, 0.55, 1)
    ce = np.clip(pn + np.random.default_rng(2).integers(-4, 6, n) / 75, 0, 1)
    sch = np.clip(ce + np.random.default_rng(3).integers(-3, 5, n) / 75, 0, 1)
    acc = {"protonet": pn, "ce": ce, "schane": sch}
    return write_run(tmp_path / "run", acc), acc


def test_main_table_means_and_intervals_equal_scipy(three_methods, tmp_path):
    run, acc = three_methods
    rep = build_report([run], tmp_path / "rep", ["csv", "md"], figures=False)
    table = pd.read_csv(tmp_path / "rep" / "main_table.csv")
    assert list(table["label"]) == ["protonet", "ce", "schane"]
    for m, x in acc.items():
        row = table[table["label"] == m].iloc[0]
        assert row["n"] == len(x)
        assert row["mean"] == pytest.approx(100 * x.mean(), rel=1e-12)
        assert row["ci95"] == pytest.approx(100 * ci(x), rel=1e-10)
        assert row["accuracy"] == f"{100 * x.mean():.2f} +- {100 * ci(x):.2f}"
        assert row["accuracy"] in (tmp_path / "rep" / "main_table.md").read_text()
    assert rep.accuracy.shape[0] == 3


def test_paired_table_equals_scipy(three_methods, tmp_path):
    run, acc = three_methods
    build_report([run], tmp_path / "rep", ["csv"], figures=False)
    paired = pd.read_csv(tmp_path / "rep" / "paired_table.csv")
    got = [(a, b) for a, b in zip(paired["a"], paired["b"])]
    assert got == [("ce", "schane"), ("protonet", "ce"), ("protonet", "schane")]
    for r in paired.itertuples():
        xa, xb = acc[r.a], acc[r.b]
        d = np.round(xb - xa, 12)
        assert r.n == len(d)
        assert r.mean_diff == pytest.approx(100 * d.mean(), abs=1e-9)
        assert r.ci95 == pytest.approx(100 * ci(d), rel=1e-9)
        assert r.t_p == pytest.approx(stats.ttest_rel(xb, xa).pvalue, rel=1e-9)
        assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue, rel=1e-9)
        assert (r.wins, r.ties, r.losses) == ((d > 0).sum(), (d == 0).sum(), (d < 0).sum())


def test_failed_episodes_are_left_out_and_shown(tmp_path):
    acc = {"ce": accuracies(30, 0.5, 1), "schane": accuracies(30, 0.6, 2)}
    run = write_run(tmp_path / "run", acc, failed={"schane": [3, 7]})
    rep = build_report([run], tmp_path / "rep", ["csv", "md"], figures=False)
    row = rep.accuracy.set_index("label").loc["schane"]
    keep = np.delete(acc["schane"], [3, 7])
    assert (row["n"], row["failed"]) == (28, 2)
    assert row["mean"] == pytest.approx(100 * keep.mean())
    assert "(2 failed)" in (tmp_path / "rep" / "main_table.md").read_text()
    assert rep.paired.iloc[0]["n"] == 28


# --------------------------------------------------------------------------------------
# Best-method marking
# --------------------------------------------------------------------------------------


def test_best_is_marked_only_without_overlap(tmp_path):
    n = 200
    clear = write_run(tmp_path / "clear", {"ce": accuracies(n, 0.40, 1), "schane": accuracies(n, 0.70, 2)},
                      shots=5)
    close = write_run(tmp_path / "close", {"ce": accuracies(n, 0.50, 3), "schane": accuracies(n, 0.51, 4)},
                      shots=1)
    rep = build_report([clear, close], tmp_path / "rep", ["md", "latex", "csv", "html"], figures=False)
    best = rep.accuracy.set_index(["shots", "label"])["best"]
    assert best[(5, "schane")] and not best[(5, "ce")]
    assert not best[(1, "schane")] and not best[(1, "ce")]
    md = (tmp_path / "rep" / "main_table.md").read_text()
    lines = {ln.split("|")[3].strip(): ln for ln in md.splitlines()[2:]}
    assert re.search(r"\*\*\d+\.\d\d \+- \d+\.\d\d\*\*", lines["5"])
    assert "**" not in lines["1"]
    assert md.count("**") == 2
    tex = (tmp_path / "rep" / "main_table.tex").read_text()
    assert tex.count("\\textbf{") == 1 and "$\\pm$" in tex and "tf\\_efficientnet\\_lite0" in tex
    assert (tmp_path / "rep" / "report.html").read_text().count("<strong>") == 1
    assert pd.read_csv(tmp_path / "rep" / "main_table.csv")["best"].sum() == 1
    assert rep.text.count(" *") == 1 and "\n* best of its row" in rep.text  # terminal: marker + footnote


# --------------------------------------------------------------------------------------
# Pairing across runs: only on the same episodes
# --------------------------------------------------------------------------------------


def test_runs_on_the_same_episodes_are_paired_across_runs(tmp_path):
    ce, sch = accuracies(50, 0.5, 1), accuracies(50, 0.55, 2)
    a = write_run(tmp_path / "a", {"ce": ce})
    b = write_run(tmp_path / "b", {"schane": sch})
    rep = build_report([a, b], tmp_path / "rep", ["csv"], figures=False)
    assert len(rep.merged.settings) == 1
    r = rep.paired.iloc[0]
    assert (r["a"], r["b"], r["n"]) == ("ce", "schane", 50)
    assert r["t_p"] == pytest.approx(stats.ttest_rel(sch, ce).pvalue)


def test_different_episode_files_are_not_paired_and_the_report_says_so(tmp_path):
    a = write_run(tmp_path / "a", {"ce": accuracies(40, 0.5, 1)}, episodes_hash="1" * 64)
    b = write_run(tmp_path / "b", {"schane": accuracies(40, 0.6, 2)}, episodes_hash="2" * 64)
    rep = build_report([a, b], tmp_path / "rep", ["md", "csv"], figures=False)
    assert len(rep.merged.settings) == 2  # one row per episode file
    assert rep.paired.empty
    note = next(n for n in rep.notes if "different episode files" in n)
    assert "ce" in note and "schane" in note and "unpaired" in note
    assert "same name but different contents" in note  # same key, other hash
    assert "episode file" in (tmp_path / "rep" / "main_table.md").read_text().splitlines()[0]
    assert "different episode files" in (tmp_path / "rep" / "report.md").read_text()


def test_explicit_pair_of_different_episode_files_is_refused(tmp_path):
    a = write_run(tmp_path / "a", {"ce": accuracies(40, 0.5, 1)}, episodes_key="k1", seed=0)
    b = write_run(tmp_path / "b", {"schane": accuracies(40, 0.6, 2)}, episodes_key="k2", seed=0,
                  episodes_hash="f" * 64)
    result = invoke(["report", str(a), str(b), "--out", str(tmp_path / "rep"), "--pair", "ce", "schane"])
    assert result.exit_code == 2, explain(result)
    assert "different episode files" in result.stderr and "k1" in result.stderr and "k2" in result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(BenchError, match="cannot be paired"):
        paired_results(merge_runs([load_run(a), load_run(b)]), [("ce", "schane")])
    # without --pair the same runs are reported, unpaired, exit 0
    result = invoke(["report", str(a), str(b), "--out", str(tmp_path / "rep2"), "--no-figures"])
    assert result.exit_code == 0, explain(result)
    assert "note:" in result.stdout and "unpaired" in result.stdout


def test_explicit_pairs_are_used_and_checked(tmp_path):
    acc = {"protonet": accuracies(30, 0.5, 1), "ce": accuracies(30, 0.5, 2), "schane": accuracies(30, 0.6, 3)}
    run = write_run(tmp_path / "run", acc)
    rep = build_report([run], tmp_path / "rep", ["csv"], pairs=[("schane", "protonet")], figures=False)
    assert [(r.a, r.b) for r in rep.paired.itertuples()] == [("schane", "protonet")]
    other = write_run(tmp_path / "other", {"supcon": accuracies(30, 0.5, 4)}, shots=5)
    with pytest.raises(BenchError, match="never run in the same setting"):
        build_report([run, other], tmp_path / "rep2", ["csv"], pairs=[("ce", "supcon")], figures=False)
    for bad, msg in ((["nope", "ce"], "no run holds"), (["ce", "ce"], "same column")):
        result = invoke(["report", str(run), "--out", str(tmp_path / "x"), "--pair", *bad])
        assert result.exit_code == 2 and msg in result.stderr, explain(result)


# --------------------------------------------------------------------------------------
# Labels: hyperparameters that differ between runs
# --------------------------------------------------------------------------------------


def test_hyperparameters_that_differ_become_labels(tmp_path):
    ce = accuracies(60, 0.5, 1)
    runs = [write_run(tmp_path / f"lam{lam}", {"ce": ce, "schane": accuracies(60, 0.5 + lam / 10, 2)}, lam=lam)
            for lam in (0.5, 0.9, 0.2)]
    rep = build_report(runs, tmp_path / "rep", ["csv", "md"], figures=False)
    assert rep.merged.labels == ["ce", "schane(lambda=0.2)", "schane(lambda=0.5)", "schane(lambda=0.9)"]
    assert any("counted once" in n for n in rep.notes)  # CE is identical in the three runs
    assert [(r.a, r.b) for r in rep.paired.itertuples()] == [
        ("ce", "schane(lambda=0.2)"), ("ce", "schane(lambda=0.5)"), ("ce", "schane(lambda=0.9)")]
    header = (tmp_path / "rep" / "main_table.md").read_text().splitlines()[0]
    assert "schane(lambda=0.5)" in header
    # a label name works with --pair
    r2 = build_report(runs, tmp_path / "rep2", ["csv"], pairs=[("schane(lambda=0.2)", "schane(lambda=0.9)")],
                      figures=False)
    assert r2.paired.iloc[0]["n"] == 60
    with pytest.raises(BenchError, match="ambiguous"):
        build_report(runs, tmp_path / "rep3", ["csv"], pairs=[("ce", "schane")], figures=False)


def test_same_label_with_different_results_is_kept_apart(tmp_path):
    a = write_run(tmp_path / "a", {"ce": accuracies(30, 0.5, 1)})
    b = write_run(tmp_path / "b", {"ce": accuracies(30, 0.5, 2)})
    rep = build_report([a, b], tmp_path / "rep", ["csv"], figures=False)
    assert rep.merged.labels == ["ce@a", "ce@b"]
    assert any("different results" in n for n in rep.notes)


def test_settings_become_rows_and_varying_columns_are_shown(tmp_path):
    runs = [write_run(tmp_path / f"{ds}{k}{tune}", {"ce": accuracies(20, 0.5, k), "schane": accuracies(20, 0.6, k)},
                      shots=k, dataset=ds, tune=tune)
            for ds, k, tune in (("emoji", 1, "norm"), ("emoji", 5, "norm"), ("emoji", 5, "last"))]
    rep = build_report(runs, tmp_path / "rep", ["md"], figures=False)
    header = (tmp_path / "rep" / "main_table.md").read_text().splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == ["data set", "backbone", "tune", "shots", "ce", "schane"]
    assert len(rep.accuracy) == 6 and len(rep.paired) == 3


# --------------------------------------------------------------------------------------
# Outputs and refusals
# --------------------------------------------------------------------------------------


def test_every_format_is_written(tmp_path):
    emb = {m: clustered(2, 5, 3, 16, 0.5, i) for i, m in enumerate(("protonet", "ce", "schane"))}
    acc = {m: accuracies(25, 0.5, i) for i, m in enumerate(("protonet", "ce", "schane"))}
    run = write_run(tmp_path / "run", acc, curves=5, embeddings=emb, queries=3)
    # figures: tests/test_plots.py; here the tables of every format
    result = invoke(["report", str(run), "--out", str(tmp_path / "rep"), "--format", "md,csv,latex,html",
                     "--no-figures"])
    assert result.exit_code == 0, explain(result)
    out = tmp_path / "rep"
    for name in ("report.md", "report.html", "main_table.md", "main_table.csv", "main_table.tex",
                 "paired_table.md", "paired_table.csv", "paired_table.tex", "embedding_quality.csv",
                 "embedding_quality.md", "embedding_quality.tex", "episodes.csv"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") == 4  # main, paired, embeddings, runs
    assert "<link" not in page and "http" not in page and "<script" not in page
    md = (out / "report.md").read_text()
    assert "isotropy" in md and "silhouette" in md.lower() and "## Runs" in md
    assert len(pd.read_csv(out / "episodes.csv")) == 75


def test_only_the_requested_formats_are_written(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.5, 1)})
    result = invoke(["report", str(run), "--out", str(tmp_path / "rep"), "--format", "csv", "--no-figures"])
    assert result.exit_code == 0, explain(result)
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [
        "episodes.csv", "main_table.csv", "paired_table.csv"]


def test_a_folder_of_runs_is_expanded(tmp_path):
    for k in (1, 5):
        write_run(tmp_path / "results" / f"r{k}", {"ce": accuracies(10, 0.5, k)}, shots=k)
    assert [p.name for p in find_run_dirs([tmp_path / "results", tmp_path / "results" / "r1"])] == ["r1", "r5"]


@pytest.mark.parametrize("case", ["missing", "not-a-run", "format", "out-is-file", "no-rows"])
def test_bad_input_exits_2_with_a_message(tmp_path, case):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.5, 1)})
    out = tmp_path / "rep"
    args = {"missing": [str(tmp_path / "nope")], "not-a-run": [str(tmp_path / "empty")],
            "format": [str(run), "--format", "pdf"], "out-is-file": [str(run)],
            "no-rows": [str(tmp_path / "norows")]}[case]
    (tmp_path / "empty").mkdir()
    if case == "out-is-file":
        out.write_text("x")
    if case == "no-rows":
        (tmp_path / "norows").mkdir()
        (tmp_path / "norows" / "run.json").write_text((run / "run.json").read_text())
    result = invoke(["report", *args, "--out", str(out), "--no-figures"])
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def _rewrite_log(run, text: str) -> None:
    log = run / "episodes.jsonl"
    log.write_text(log.read_text() + text)


DAMAGED_RUNS = {  # damage -> words of the message
    "run.json null": (lambda run: (run / "run.json").write_text("null"), "holds null"),
    "run.json a list": (lambda run: (run / "run.json").write_text("[]"), "holds a list"),
    "hardware a string": (lambda run: (run / "run.json").write_text(json.dumps(
        {**json.loads((run / "run.json").read_text()), "hardware": "x"})), "'hardware' is a string"),
    "a number row": (lambda run: _rewrite_log(run, "5\n"), "line 11 is damaged"),
    "a row without episode": (lambda run: _rewrite_log(run, '{"method": "ce", "accuracy": 0.5}\n'),
                              "lacks 'episode'"),
    "episode out of range": (lambda run: _rewrite_log(
        run, '{"episode": 99, "method": "ce", "accuracy": 0.5}\n'), "out of range"),
    "a 0xff byte": (lambda run: (run / "episodes.jsonl").write_bytes(
        b"\xff" + (run / "episodes.jsonl").read_bytes()), "is corrupt: line 1"),
    "log is a folder": (lambda run: ((run / "episodes.jsonl").unlink(),
                                     (run / "episodes.jsonl").mkdir()), "Cannot read"),
}


@pytest.mark.parametrize("damage, words", list(DAMAGED_RUNS.values()), ids=list(DAMAGED_RUNS))
def test_a_damaged_run_folder_exits_2_naming_the_damage(tmp_path, damage, words):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.5, 1)})
    damage(run)
    result = invoke(["report", str(run), "--out", str(tmp_path / "rep"), "--no-figures"])
    assert result.exit_code == 2, explain(result)
    assert words in result.stderr and str(run) in result.stderr, result.stderr
    assert "Traceback" not in result.output and "\n" not in result.stderr.strip()


def test_unfinished_run_and_broken_last_line_are_noted(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.5, 1)}, finished=False)
    with open(run / "episodes.jsonl", "a") as f:
        f.write('{"episode": 10, "meth')
    rep = build_report([run], tmp_path / "rep", ["md"], figures=False)
    assert any("did not finish" in n for n in rep.notes)
    assert any("incomplete" in n for n in rep.notes)
    assert rep.accuracy.iloc[0]["n"] == 10
    assert (run / "episodes.jsonl").read_text().endswith('"meth')  # a reader cuts nothing


# --------------------------------------------------------------------------------------
# A real tiny run, reported
# --------------------------------------------------------------------------------------


def test_report_of_a_real_tiny_run(tiny, tmp_path):
    out = tmp_path / "r"
    result = invoke(tiny.args(tmp_path / "episodes", out, "--embeddings", "2"), tmp_path)
    assert result.exit_code == 0, explain(result)
    rep_dir = tmp_path / "report"
    result = invoke(["report", str(out), "--out", str(rep_dir)], tmp_path)
    assert result.exit_code == 0, explain(result)
    assert "schane - ce" in result.stdout
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    ce = np.array([r["accuracy"] for r in rows if r["method"] == "ce"])
    main_csv = pd.read_csv(rep_dir / "main_table.csv").set_index("label")
    assert main_csv.loc["ce", "mean"] == pytest.approx(100 * ce.mean())
    emb = pd.read_csv(rep_dir / "embedding_quality.csv")
    assert list(emb["label"]) == ["protonet", "ce", "schane"] and (emb["episodes"] == 2).all()
    assert emb[["isotropy_entropy", "isotropy_partition"]].gt(0).all().all()
    # the run saved each episode's class names for the PCA legend
    from fewshot_bench.embedding_quality import load_class_names
    from fewshot_bench.report import embedding_table

    names = load_class_names(out / "embeddings.npz")
    assert names.shape == (2, 5) and all(n and not n.isdigit() for n in names.ravel())
    _, pca = embedding_table(merge_runs([load_run(out)]))
    assert [it[4] for it in next(iter(pca.values()))] == [list(names[0])] * 3
    figs = sorted(p.name for p in (rep_dir / "figures").iterdir())
    for stem in ("accuracy", "paired_scatter", "paired_differences", "loss_curves"):
        assert f"{stem}.png" in figs and f"{stem}.pdf" in figs
    assert any(f.startswith("embeddings_pca_") and f.endswith(".png") for f in figs)
    assert all((rep_dir / "figures" / f).stat().st_size > 1000 for f in figs)


def test_default_pairs_for_the_new_methods():
    """CE is paired with contrastive methods only (not the frozen-backbone linear probe),
    SCHaNe with its detached-weights variant when trained alike, ProtoNet with everything."""
    from fewshot_bench.report import default_pairs

    train = {"steps": 50, "lr": 0.01, "lam": 0.9, "tau": 0.1, "beta": 1.0}
    info = {m: {"method": m, **train} for m in
            ("protonet", "linear-probe", "ce", "schane", "schane-detached")}
    info["other-schane"] = {"method": "schane", **train, "tau": 0.5}
    labels = list(info)
    pairs = default_pairs(labels, info)
    assert ("ce", "linear-probe") not in pairs
    assert ("ce", "schane") in pairs and ("ce", "schane-detached") in pairs
    assert ("schane", "schane-detached") in pairs
    assert ("other-schane", "schane-detached") not in pairs  # tau differs: not comparable
    assert [b for a, b in pairs if a == "protonet"] == [lb for lb in labels if lb != "protonet"]


def test_runs_on_other_weights_are_labels_of_one_setting_and_paired(tmp_path):
    """`bench transfer`'s three backbones on one episode file: one setting row, the weights
    in the labels (a weights.pth is named by its folder), and the default pairs compare the
    same method across networks (pretrained first), never across methods and networks."""
    n = 40
    for name, weights, p in (("pre", None, 0.5), ("ce", "ft/ce/weights.pth", 0.55),
                             ("sc", "ft/schane/weights.pth", 0.6)):
        write_run(tmp_path / name, {"protonet": accuracies(n, p, 1), "logreg": accuracies(n, p, 2)},
                  weights=weights)
    runs = [load_run(tmp_path / r) for r in ("pre", "ce", "sc")]
    merged = merge_runs(runs)
    assert len(merged.settings) == 1
    assert set(merged.labels) == {f"{m}(weights={w})" for m in ("protonet", "logreg")
                                  for w in ("pretrained", "ce", "schane")}
    table, _ = paired_results(merged)
    pairs = set(zip(table["a"], table["b"]))
    for m in ("protonet", "logreg"):
        assert (f"{m}(weights=pretrained)", f"{m}(weights=ce)") in pairs
        assert (f"{m}(weights=pretrained)", f"{m}(weights=schane)") in pairs
        assert (f"{m}(weights=ce)", f"{m}(weights=schane)") in pairs
    assert ("protonet(weights=pretrained)", "logreg(weights=ce)") not in pairs
    assert ("protonet(weights=ce)", "logreg(weights=ce)") in pairs


# --------------------------------------------------------------------------------------
# Paper-ready LaTeX: booktabs named, constant columns in the caption, a column's width
# --------------------------------------------------------------------------------------

ARTICLE_COLUMN_PT, TWO_COLUMN_PT = 345.0, 240.0


def example_runs(root):
    """Like the README's example report (scripts/make_readme_report.py): emoji, 5-way,
    15 queries, 600 episodes at 1 and 5 shots, ProtoNet, CE and SCHaNe, 5 episodes of
    embeddings saved."""
    methods = ("protonet", "ce", "schane")
    runs = []
    for shots, base in ((1, 0.54), (5, 0.735)):
        acc = {m: accuracies(600, base + 0.01 * i, 10 * shots + i) for i, m in enumerate(methods)}
        emb = {m: clustered(5, 5, 15, 32, 0.5 + 0.1 * i, i) for i, m in enumerate(methods)}
        runs.append(write_run(root / f"emoji-5w{shots}s-600e", acc, shots=shots, embeddings=emb,
                              curves=4))
    return runs


@pytest.fixture(scope="module")
def example_latex(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    build_report(example_runs(root), root / "rep", ["latex", "md", "html"], figures=False)
    return {p.stem: p.read_text() for p in (root / "rep").glob("*.tex")}, root / "rep"


def _plain_width_pt(cell: str) -> float:
    """A cell's printed width at 10 pt, estimated from its characters (an independent
    reading of the .tex file): 5 pt a character, 7.8 pt a math symbol."""
    cell = re.sub(r"\\textbf\{(.*)\}", r"\1", cell.strip())
    symbols = len(re.findall(r"\\pm|\$-\$|[<>]", cell))
    cell = re.sub(r"\\pm|\$-\$|[<>]", "", cell)
    cell = re.sub(r"\\([_%&#$])", r"\1", cell).replace("$", "").replace("^", "").replace("{", "").replace("}", "")
    return 5.0 * len(cell) + 7.8 * symbols


def latex_table_width(tex: str) -> float:
    """Estimated width (pt) of the tabular in `tex`: the widest cell of each column (the
    lines of a stacked header apart), scaled to \\small, plus 2 \\tabcolsep = 12 pt between
    columns (the outer ones are dropped with @{})."""
    body = tex.split("\n\\toprule\n", 1)[1].split("\n\\bottomrule", 1)[0]
    widths: list[float] = []
    for line in body.replace("\\midrule", "").strip().splitlines():
        cells = line.strip().removesuffix("\\\\").split(" & ")
        for j, c in enumerate(cells):
            m = re.match(r"\\begin\{tabular\}\[b\]\{@\{\}\w@\{\}\}(.*)\\end\{tabular\}", c.strip())
            w = max(_plain_width_pt(x) for x in m[1].split("\\\\")) if m else _plain_width_pt(c)
            if j < len(widths):
                widths[j] = max(widths[j], w)
            else:
                widths.append(w)
    scale = 0.9 if "\\small" in tex else 1.0
    assert "@{}" in tex.split("\\begin{tabular}", 1)[1].splitlines()[0]
    return scale * sum(widths) + 12.0 * (len(widths) - 1)


def test_latex_tables_of_the_example_report_fit_a_column(example_latex):
    tables, _ = example_latex
    assert set(tables) == {"main_table", "paired_table", "embedding_quality"}
    widths = {name: latex_table_width(tex) for name, tex in tables.items()}
    assert all(w <= ARTICLE_COLUMN_PT for w in widths.values()), widths
    assert widths["main_table"] <= TWO_COLUMN_PT, widths
    for name, tex in tables.items():  # the file's own estimate agrees
        stated = float(re.search(r"Estimated width at \\small: (\d+) pt", tex)[1])
        assert stated == pytest.approx(widths[name], abs=15), name


def test_latex_names_booktabs_and_puts_constant_columns_in_the_caption(example_latex):
    tables, _ = example_latex
    for name, tex in tables.items():
        header = [ln for ln in tex.splitlines() if ln.startswith("%")]
        assert any("\\usepackage{booktabs}" in ln for ln in header), name
        assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
        caption = re.search(r"\\caption\{(.*)\}", tex)[1]
        # emoji and the backbone are the same in every row: named once, in the caption
        assert "data set: emoji" in caption and "backbone: tf\\_efficientnet\\_lite0" in caption, name
        table = tex.split("\n\\toprule\n", 1)[1]
        assert "emoji" not in table and "efficientnet" not in table, name
        assert f"\\label{{tab:{name.replace('_', '-')}}}" in tex
    main = tables["main_table"].split("\n\\toprule\n", 1)[1].splitlines()[0]
    assert main.split(" & ")[0] == "shots"  # the 1- and 5-shot rows differ: kept
    assert "episodes: 600" in tables["paired_table"]  # same count in every comparison
    assert "episodes: 5" in tables["embedding_quality"]


def test_latex_uses_real_minus_signs(tmp_path):
    ce = accuracies(40, 0.6, 1)
    worse = np.clip(ce - 0.04, 0, 1)
    run = write_run(tmp_path / "run", {"ce": ce, "schane": worse})
    build_report([run], tmp_path / "rep", ["latex", "md", "html", "csv"], figures=False)
    tex = (tmp_path / "rep" / "paired_table.tex").read_text()
    row = tex.split("\n\\midrule\n", 1)[1].splitlines()[0]
    assert "schane $-$ ce" in row and "$-$4.00 $\\pm$ 0.00" in row, row
    assert re.search(r"(?<![$^{])-\d", tex.split("\n\\toprule\n")[1]) is None  # no hyphen as a minus
    md = (tmp_path / "rep" / "paired_table.md").read_text()
    assert "schane \u2212 ce" in md and "\u22124.00" in md and "-4.00" not in md
    assert "\u22124.00" in (tmp_path / "rep" / "report.html").read_text()
    assert pd.read_csv(tmp_path / "rep" / "paired_table.csv")["mean_diff"].iloc[0] == pytest.approx(-4.0)


def test_a_folder_data_set_is_named_by_its_folder(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(20, 0.5, 1), "schane": accuracies(20, 0.6, 2)},
                    dataset=f"folder:{tmp_path}/images/flowers")
    rep = build_report([run], tmp_path / "rep", ["latex", "md", "csv"], figures=False)
    for name in ("main_table.tex", "main_table.md", "report.md"):
        text = (tmp_path / "rep" / name).read_text()
        assert "flowers" in text and str(tmp_path) not in text.split("## Runs")[0], name
    assert rep.merged.settings.loc[0, "title"].startswith("flowers · ")
    # the CSV keeps the value the run recorded
    assert pd.read_csv(tmp_path / "rep" / "main_table.csv")["dataset"].iloc[0] == f"folder:{tmp_path}/images/flowers"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine (pdflatex) on PATH")
def test_latex_tables_compile_in_an_article(example_latex, tmp_path):
    tables, out = example_latex
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
           + "".join(f"\\input{{{out / name}.tex}}\n" for name in tables) + "\\end{document}\n")
    (tmp_path / "doc.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Overfull \\hbox" not in proc.stdout


# --------------------------------------------------------------------------------------
# Display names: --label
# --------------------------------------------------------------------------------------


def test_label_option_renames_methods_in_every_table_and_figure(tmp_path, monkeypatch):
    runs = [write_run(tmp_path / f"lam{lam}", {"protonet": accuracies(30, 0.45, 0),
                                               "ce": accuracies(30, 0.5, 1),
                                               "schane": accuracies(30, 0.5 + lam / 10, 2)},
                      lam=lam, curves=3)
            for lam in (0.5, 0.9)]
    out = tmp_path / "rep"
    result = invoke(["report", *map(str, runs), "--out", str(out), "--label", "ce=CE",
                     "--label", "schane=SCHaNe", "--label", "protonet=ProtoNet",
                     "--label", "schane(lambda=0.9)=SCHaNe, λ=0.9", "--format", "md,latex,html,csv"])
    assert result.exit_code == 0, explain(result)
    md = (out / "main_table.md").read_text()
    header = [h.strip() for h in md.splitlines()[0].strip("|").split("|")]
    assert header[-4:] == ["ProtoNet", "CE", "SCHaNe(lambda=0.5)", "SCHaNe, λ=0.9"]
    assert "SCHaNe(lambda=0.5) \u2212 CE" in (out / "paired_table.md").read_text()
    assert "SCHaNe(lambda=0.5) $-$ CE" in (out / "paired_table.tex").read_text()
    assert "SCHaNe(lambda=0.5) - CE" in result.stdout
    page = (out / "report.html").read_text()
    assert "ProtoNet" in page and ">schane" not in page
    # the CSV files keep the labels (stable keys for scripts)
    assert "schane(lambda=0.5)" in set(pd.read_csv(out / "main_table.csv")["label"])
    # figures: legends and titles carry the names
    from fewshot_bench import plots

    seen = []
    orig = plots.save

    def spy(fig, stem):
        seen.append({t.get_text() for ax in fig.axes for t in
                     [*(ax.get_legend().get_texts() if ax.get_legend() else []), ax.title,
                      ax.xaxis.label, ax.yaxis.label]})
        return orig(fig, stem)

    monkeypatch.setattr(plots, "save", spy)
    build_report(runs, tmp_path / "rep2", ["md"], names={"ce": "CE", "schane": "SCHaNe", "protonet": "ProtoNet"})
    texts = " ".join(t for s in seen for t in s)
    assert "CE" in texts and "SCHaNe(lambda=0.9)" in texts and "ProtoNet" in texts
    assert not re.search(r"\b(ce|schane|protonet)\b", texts), texts


def test_label_option_mistakes_exit_2(tmp_path):
    run = write_run(tmp_path / "run", {"ce": accuracies(10, 0.5, 1), "schane": accuracies(10, 0.6, 2)})
    for bad, words in ((["--label", "cee=CE"], "no column or method"), (["--label", "ce"], "lacks '='"),
                       (["--label", "ce=X", "--label", "schane=X"], "both as 'X'"),
                       (["--label", "ce="], "empty name")):
        result = invoke(["report", str(run), "--out", str(tmp_path / "rep"), "--no-figures", *bad])
        assert result.exit_code == 2 and words in result.stderr, explain(result)
    # a display name works with --pair
    result = invoke(["report", str(run), "--out", str(tmp_path / "rep"), "--no-figures",
                     "--label", "ce=CE", "--pair", "CE", "schane"])
    assert result.exit_code == 0 and "schane - CE" in result.stdout, explain(result)


def test_a_full_disk_leaves_the_old_report_whole(tmp_path, monkeypatch):
    """Issue 17: the report is written aside and moved into place, so a write that fails
    midway (ENOSPC) leaves the previous report as it was and no half-written files."""
    import errno

    from fewshot_bench.report import build

    acc = {m: accuracies(25, 0.5, i) for i, m in enumerate(("protonet", "ce", "schane"))}
    run = write_run(tmp_path / "run", acc)
    out = tmp_path / "rep"
    assert invoke(["report", str(run), "--out", str(out), "--no-figures"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = build.write_atomic, []

    def fill_up(path, text):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(build, "write_atomic", fill_up)
    result = invoke(["report", str(run), "--out", str(out), "--no-figures", "--label", "ce=CE"])
    assert result.exit_code == 2 and "disk is full" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "run"]  # no staging folder
