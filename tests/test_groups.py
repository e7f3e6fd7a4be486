"""Group-aware episodes: no query is a near-copy (same group) of a support image, and the
groups come from the data set, a groups file, or both (episodes.py, data/groups.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fewshot_bench.cli import main
from fewshot_bench.data import create_dataset
from fewshot_bench.data.base import ImageSplit, grouped_fingerprint
from fewshot_bench.data.groups import merge_groups, read_groups_file, resolve_groups
from fewshot_bench.episodes import (EpisodeSpec, get_or_create_episodes, leak_free_classes,
                                    load_episodes, query_leaks, sample_episodes, save_episodes)
from fewshot_bench.errors import BenchError

FP = "0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]


def grouped_data(n_classes=8, groups_per_class=12, seed=0):
    """Labels and groups shaped like emoji (two images per group) plus a few singletons and
    a triple, shuffled so that group members are not adjacent."""
    labels, groups = [], []
    g = 0
    for c in range(n_classes):
        sizes = [2] * groups_per_class + [1, 1, 3]
        for size in sizes:
            labels += [c] * size
            groups += [g] * size
            g += 1
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.array(labels)[order], np.array(groups)[order]


def spec(**kw) -> EpisodeSpec:
    base = dict(dataset="toy", split="test", ways=5, shots=2, queries=6, episodes=300, seed=0,
                grouped=True)
    base.update(kw)
    return EpisodeSpec(**base)


@pytest.mark.parametrize("shots,dist", [(1, None), (5, None), (4, "uniform:1-4")])
def test_no_group_on_both_sides(shots, dist):
    labels, groups = grouped_data()
    es = sample_episodes(labels, spec(shots=shots, shots_dist=dist), FP, groups)
    assert not query_leaks(es, groups).any()
    # the same check by brute force, episode by episode
    for e in range(len(es)):
        assert not set(groups[es.support[e]]) & set(groups[es.query[e]])
    es.check_against_labels(labels)
    # each class's support images come from distinct groups, queries are distinct images
    k = es.spec.shots
    per_class = groups[es.support].reshape(len(es), -1, k)
    real = es.support_mask.reshape(len(es), -1, k)
    for e, c in zip(*np.nonzero(real.any(axis=2))):
        assert len(set(per_class[e, c][real[e, c]])) == real[e, c].sum()
    assert all(len(set(q)) == q.size for q in es.query)


def test_ungrouped_sampler_leaks_and_is_unchanged():
    """Without groups the draw is the old one (same stream), which does leak."""
    labels, groups = grouped_data()
    plain = sample_episodes(labels, spec(grouped=False), FP)
    assert query_leaks(plain, groups).any()
    assert plain.spec.key.endswith("seed0") and spec().key.endswith("seed0-grouped")


def test_deterministic_and_prefix_stable():
    labels, groups = grouped_data()
    a = sample_episodes(labels, spec(), FP, groups)
    b = sample_episodes(labels, spec(), FP, groups)
    assert a.content_hash == b.content_hash
    short = sample_episodes(labels, spec(episodes=50), FP, groups)
    np.testing.assert_array_equal(short.query, a.query[:50])
    other = sample_episodes(labels, spec(seed=1), FP, groups)
    assert not np.array_equal(other.query, a.query)


def test_every_class_and_group_is_used():
    labels, groups = grouped_data()
    es = sample_episodes(labels, spec(episodes=600), FP, groups)
    assert set(np.unique(es.classes)) == set(np.unique(labels))
    assert len(np.unique(groups[es.query])) == len(np.unique(groups))


def test_classes_without_enough_groups_sit_out():
    labels, groups = grouped_data(n_classes=7)
    # class 6 gets only 4 groups of two: 2 shots take 2 of them, leaving 4 images < 6 queries
    keep = (labels != 6) | np.isin(groups, np.unique(groups[labels == 6])[:4])
    labels, groups = labels[keep], groups[keep]
    ids, eligible, n_groups = leak_free_classes(labels, groups, 2, 6)
    assert eligible.tolist() == [True] * 6 + [False] and n_groups[6] == 4
    es = sample_episodes(labels, spec(), FP, groups)
    assert 6 not in es.classes
    with pytest.raises(BenchError, match=r"only 6 of the 7 classes.*6 \(4 groups\).*--groups none"):
        sample_episodes(labels, spec(ways=7), FP, groups)


def test_groups_across_classes_are_respected():
    """A near-copy filed under another class (found by the audit) never faces its twin."""
    labels, groups = grouped_data()
    # join one group of class 0 with one of class 1
    g0 = groups[labels == 0][0]
    g1 = groups[labels == 1][0]
    groups = np.where(groups == g1, g0, groups)
    es = sample_episodes(labels, spec(episodes=600, ways=8), FP, groups)
    assert not query_leaks(es, groups).any()


def test_stored_file_records_grouping_and_edits_are_caught(tmp_path):
    labels, groups = grouped_data()
    es, path, created = get_or_create_episodes(labels, spec(), FP, tmp_path, groups)
    assert created and path.name.endswith("-grouped.npz")
    again = load_episodes(path)
    assert again.spec.grouped and again.content_hash == es.content_hash
    # a stored grouped file whose queries leak (made by hand, hash recomputed) is refused
    bad = again.subset(range(len(again)))
    bad.query[0, 0] = bad.support[0, 0]
    save_episodes(bad, tmp_path)
    with pytest.raises(BenchError, match="share a group"):
        get_or_create_episodes(labels, spec(), FP, tmp_path, groups)


def test_grouped_fingerprint_depends_on_the_partition_only():
    g = np.array([5, 5, 7, 9, 7])
    assert grouped_fingerprint(FP, g) == grouped_fingerprint(FP, np.array([0, 0, 3, 1, 3]))
    assert grouped_fingerprint(FP, g) != grouped_fingerprint(FP, np.array([0, 1, 3, 1, 3]))
    assert grouped_fingerprint(FP, g) != FP


def test_merge_groups_joins_through_either_partition():
    a = np.array([0, 0, 1, 2, 3, 4])
    b = np.array([9, 8, 8, 7, 6, 6])
    merged = merge_groups(a, b)
    assert merged[0] == merged[1] == merged[2]
    assert merged[4] == merged[5] and len({merged[0], merged[3], merged[4]}) == 3


def _toy_split(n=10) -> ImageSplit:
    return ImageSplit("toy", "test", np.zeros((n, 4, 4, 3), np.uint8),
                      np.repeat(np.arange(2), n // 2), ["a", "b"])


def test_groups_file_reader(tmp_path):
    data = _toy_split()
    f = tmp_path / "groups.csv"
    f.write_text("split,index,group,dataset,fingerprint\n"
                 f"test,0,x,toy,{data.fingerprint()}\ntest,3,x,toy,{data.fingerprint()}\n"
                 f"test,4,y,toy,{data.fingerprint()}\ntest,4,z,toy,{data.fingerprint()}\n"
                 f"test,8,z,toy,{data.fingerprint()}\ntrain,1,x,toy,other\n")
    g = read_groups_file(f, data)
    assert g[0] == g[3] and g[4] == g[8] and len(np.unique(g)) == 10 - 2
    grouping = resolve_groups(data, str(f))
    assert grouping.file_sha256 and grouping.count == 8


@pytest.mark.parametrize("text,words", [
    ("split,index\ntest,1\n", "lacks the column"),
    ("split,index,group\ntest,99,a\n", "not an image of toy/test"),
    ("split,index,group\ntest,-1,a\n", "not an image"),
    ("split,index,group\ntest,x,a\n", "not an image"),
    ("split,index,group,dataset\ntest,1,a,emoji\n", "for the data set emoji"),
    ("split,index,group,fingerprint\ntest,1,a,ffff\n", "made for other data"),
])
def test_groups_file_errors(tmp_path, text, words):
    f = tmp_path / "g.csv"
    f.write_text(text)
    with pytest.raises(BenchError, match=words):
        read_groups_file(f, _toy_split())


def test_missing_groups_file(tmp_path):
    with pytest.raises(BenchError, match="no such file"):
        resolve_groups(_toy_split(), str(tmp_path / "nope.csv"))


def test_emoji_groups_are_code_points():
    data = create_dataset("emoji", "test")
    assert data.groups is not None
    unified = data.meta["unified"]
    for g in np.unique(data.groups)[:50]:
        assert len(set(unified[data.groups == g])) == 1
    assert resolve_groups(data, "auto").groups is data.groups
    assert resolve_groups(data, "none").groups is None


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "episodes").glob("emoji-*.npz")))
def test_committed_emoji_episodes_do_not_leak(name):
    es = load_episodes(REPO / "episodes" / name)
    assert es.spec.grouped, f"{name} was sampled without groups"
    data = create_dataset("emoji", es.spec.split)
    assert es.data_fingerprint == grouped_fingerprint(data.fingerprint(), data.groups)
    es.check_against_labels(data.labels)
    assert query_leaks(es, data.groups).sum() == 0


def test_bench_run_groups_option(tmp_path, tiny):
    runner = CliRunner()
    res = runner.invoke(main, tiny.args(tmp_path / "ep", tmp_path / "a", "--methods", "protonet"))
    assert res.exit_code == 0, res.output
    assert "no query shares one with a support image" in res.output
    assert (tmp_path / "ep" / "emoji-test-5w1s3q-4e-seed0-grouped.npz").is_file()
    res = runner.invoke(main, tiny.args(tmp_path / "ep", tmp_path / "b", "--methods", "protonet",
                                        "--groups", "none"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ep" / "emoji-test-5w1s3q-4e-seed0.npz").is_file()
    res = runner.invoke(main, tiny.args(tmp_path / "ep", tmp_path / "c", "--methods", "protonet",
                                        "--groups", str(tmp_path / "missing.csv")))
    assert res.exit_code == 2 and "no such file" in res.output and "Traceback" not in res.output


def test_folder_groups_file_by_path_keeps_twins_apart(tmp_path, tiny):
    """A folder data set whose classes hold pairs of near-identical photos: with a groups
    file naming the pairs by path, no episode puts a pair on both sides."""
    from PIL import Image

    data_dir = tmp_path / "photos"
    rng = np.random.default_rng(0)
    rows = ["split,file,group"]
    for c in range(6):
        (data_dir / f"class{c}").mkdir(parents=True)
        for g in range(6):
            base = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            for twin in range(2):
                name = f"class{c}/img{g}_{twin}.png"
                Image.fromarray(base if twin == 0 else 255 - base).save(data_dir / name)
                rows.append(f"test,{name},c{c}g{g}")
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    data = create_dataset(f"folder:{data_dir}", "test", split_ratios="0:0:1")
    grouping = resolve_groups(data, str(tmp_path / "groups.csv"))
    assert grouping.count == 36
    s = EpisodeSpec(f"folder:{data_dir}", "test", 5, 2, 3, 100, 0, grouped=True)
    es = sample_episodes(data.labels, s, FP, grouping.groups)
    assert not query_leaks(es, grouping.groups).any()
    bad = tmp_path / "bad.csv"
    bad.write_text("split,file,group\ntest,class0/nope.png,a\n")
    with pytest.raises(BenchError, match="not images of"):
        resolve_groups(data, str(bad))


def test_audit_groups_file_feeds_the_sampler(tmp_path):
    """bench data audit --groups-out -> --groups FILE: the audit's near-duplicates and the
    code points are one grouping, and the episodes keep both apart."""
    from fewshot_bench.data.audit import audit_splits, write_groups

    data = create_dataset("emoji", "test")
    result = audit_splits([data])
    path = write_groups(result, tmp_path / "groups.csv")
    grouping = resolve_groups(data, str(path))
    assert grouping.count < len(np.unique(data.groups))  # the audit joined some code points
    s = EpisodeSpec("emoji", "test", 5, 1, 15, 200, 0, grouped=True)
    es = sample_episodes(data.labels, s, FP, grouping.groups)
    assert not query_leaks(es, grouping.groups).any()
    assert not query_leaks(es, data.groups).any()
