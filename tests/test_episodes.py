"""Episode sampling and storage: the paired comparison rests on these files being right."""

from __future__ import annotations

import json
import os
from pathlib import Path
import time

import numpy as np
import pytest

from fewshot_bench.episodes import (
    EpisodeSet,
    EpisodeSpec,
    get_or_create_episodes,
    load_episodes,
    sample_episodes,
    save_episodes,
)
from fewshot_bench.errors import BenchError

FP = "0123456789abcdef"


def make_labels(n_classes: int = 12, per_class: int = 30, seed: int = 0, uneven: bool = False) -> np.ndarray:
    """Shuffled labels, optionally with uneven class sizes and non-contiguous label values."""
    rng = np.random.default_rng(seed)
    sizes = [per_class + (3 * c if uneven else 0) for c in range(n_classes)]
    values = np.arange(n_classes) * (2 if uneven else 1)  # gaps in label values when uneven
    labels = np.repeat(values, sizes).astype(np.int64)
    rng.shuffle(labels)
    return labels


def spec(**kw) -> EpisodeSpec:
    base = dict(dataset="emoji", split="test", ways=5, shots=2, queries=3, episodes=200, seed=0)
    base.update(kw)
    return EpisodeSpec(**base)


def test_key_format():
    assert spec(shots=1, queries=15, episodes=600).key == "emoji-test-5w1s15q-600e-seed0"
    assert "/" not in spec(dataset="a/b").key


@pytest.mark.parametrize("uneven", [False, True])
def test_shapes_labels_and_class_counts(uneven):
    labels = make_labels(uneven=uneven)
    s = spec()
    es = sample_episodes(labels, s, FP)
    e, n, k, q = s.episodes, s.ways, s.shots, s.queries
    assert len(es) == e
    assert es.classes.shape == (e, n) and es.support.shape == (e, n * k) and es.query.shape == (e, n * q)
    assert es.classes.dtype == es.support.dtype == es.query.dtype == np.int64
    np.testing.assert_array_equal(es.support_labels, np.repeat(np.arange(n), k))
    np.testing.assert_array_equal(es.query_labels, np.repeat(np.arange(n), q))
    # Class-major: image i of the support set belongs to episode class support_labels[i].
    np.testing.assert_array_equal(labels[es.support], es.classes[:, es.support_labels])
    np.testing.assert_array_equal(labels[es.query], es.classes[:, es.query_labels])
    for i in range(e):
        assert len(set(es.classes[i])) == n  # classes without replacement
        assert np.bincount(es.support_labels, minlength=n).tolist() == [k] * n
    es.check_against_labels(labels)


def test_support_and_query_disjoint_without_duplicates():
    labels = make_labels(uneven=True)
    es = sample_episodes(labels, spec(shots=5, queries=10, episodes=300), FP)
    both = np.concatenate([es.support, es.query], axis=1)
    for row in both:
        assert len(np.unique(row)) == row.size


def test_indices_valid():
    labels = make_labels(uneven=True)
    es = sample_episodes(labels, spec(), FP)
    for a in (es.support, es.query):
        assert a.min() >= 0 and a.max() < len(labels)
    assert set(np.unique(es.classes)) <= set(np.unique(labels))


def test_determinism_and_seed_sensitivity():
    labels = make_labels()
    a = sample_episodes(labels, spec(seed=3), FP)
    b = sample_episodes(labels, spec(seed=3), FP)
    c = sample_episodes(labels, spec(seed=4), FP)
    for name in ("classes", "support", "query"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.content_hash == b.content_hash
    assert not np.array_equal(a.support, c.support)
    assert a.content_hash != c.content_hash


def test_does_not_touch_global_random_state():
    import random

    random.seed(1)
    np.random.seed(1)
    before = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)
    sample_episodes(make_labels(), spec(), FP)
    assert (random.random(), np.random.random()) == before


def test_prefix_stable_and_subset():
    labels = make_labels()
    long = sample_episodes(labels, spec(episodes=120), FP)
    short = sample_episodes(labels, spec(episodes=50), FP)
    sub = long.subset(range(50))
    assert sub.spec == short.spec
    assert sub.content_hash == short.content_hash
    pick = long.subset([5, 7])
    np.testing.assert_array_equal(pick.query, long.query[[5, 7]])


def test_roughly_uniform_class_and_image_usage():
    labels = make_labels(n_classes=10, per_class=20)
    s = spec(ways=5, shots=1, queries=1, episodes=4000)
    es = sample_episodes(labels, s, FP)
    class_use = np.bincount(es.classes.ravel(), minlength=10)
    expected = s.episodes * s.ways / 10  # 2000 each
    assert np.all(np.abs(class_use - expected) < 0.1 * expected)
    # Each episode class position is a random class (no ordering bias on label 0).
    first = np.bincount(es.classes[:, 0], minlength=10)
    assert np.all(np.abs(first - s.episodes / 10) < 0.25 * s.episodes / 10)
    # Images within a class are used evenly, as support and as query.
    img_use = np.bincount(es.support.ravel(), minlength=len(labels))
    exp_img = s.episodes * s.ways * s.shots / len(labels)  # 100 each
    assert np.all(np.abs(img_use - exp_img) < 0.5 * exp_img)


def test_600_episodes_fast():
    labels = make_labels(n_classes=20, per_class=600)
    sample_episodes(labels, spec(episodes=5), FP)  # warm up imports/caches
    t = time.perf_counter()
    sample_episodes(labels, spec(ways=5, shots=5, queries=15, episodes=600), FP)
    assert time.perf_counter() - t < 0.5


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(ways=1), "--ways must be at least 2"),
        (dict(shots=0), "--shots must be at least 1"),
        (dict(queries=0), "--queries must be at least 1"),
        (dict(episodes=0), "--episodes must be at least 1"),
        (dict(ways=13), "has only 12"),
        (dict(shots=20, queries=15), "largest possible --shots is 15"),
    ],
)
def test_bench_errors(kw, words):
    labels = make_labels(n_classes=12, per_class=30)
    with pytest.raises(BenchError, match=words):
        sample_episodes(labels, spec(**kw), FP)


def test_ways_error_lists_working_values():
    with pytest.raises(BenchError, match=r"--ways 2 to 12"):
        sample_episodes(make_labels(n_classes=12), spec(ways=20), FP)


def test_small_class_error_names_the_class():
    labels = np.concatenate([np.repeat(np.arange(6), 30), np.full(8, 6)])
    with pytest.raises(BenchError) as err:
        sample_episodes(labels, spec(shots=5, queries=15), FP)
    msg = str(err.value)
    assert "6 (8 images)" in msg and "7 classes" in msg
    # queries alone too many: suggests fewer queries for these shots
    with pytest.raises(BenchError, match=r"--shots 5 use --queries 3 or fewer"):
        sample_episodes(labels, spec(shots=5, queries=15), FP)


def test_save_load_roundtrip(tmp_path):
    es = sample_episodes(make_labels(), spec(), FP)
    path = save_episodes(es, tmp_path / "eps")
    assert path == tmp_path / "eps" / f"{es.spec.key}.npz"
    back = load_episodes(path)
    assert back.spec == es.spec and back.data_fingerprint == FP
    assert back.content_hash == es.content_hash
    for name in ("classes", "support", "query"):
        np.testing.assert_array_equal(getattr(back, name), getattr(es, name))
        assert getattr(back, name).dtype == np.int64


def test_atomic_write_leaves_no_temp_files(tmp_path):
    es = sample_episodes(make_labels(), spec(), FP)
    save_episodes(es, tmp_path)
    save_episodes(es, tmp_path)  # overwrite goes through os.replace as well
    assert sorted(os.listdir(tmp_path)) == [f"{es.spec.key}.npz"]


def test_failed_write_cleans_up(tmp_path, monkeypatch):
    es = sample_episodes(make_labels(), spec(), FP)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(BenchError, match="disk full"):
        save_episodes(es, tmp_path)
    assert os.listdir(tmp_path) == []


def test_unusable_episodes_dir_is_a_bench_error(tmp_path):
    es = sample_episodes(make_labels(), spec(), FP)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for directory, words in [(a_file, "is a file, not a folder"), (a_file / "sub", "Cannot create"),
                             (Path("/proc/nope"), "Cannot create")]:
        with pytest.raises(BenchError, match=words):
            save_episodes(es, directory)
    assert a_file.read_text() == "x"


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    np.savez_compressed(path, **data)


def test_tampered_index_detected(tmp_path):
    es = sample_episodes(make_labels(), spec(), FP)
    path = save_episodes(es, tmp_path)
    support = es.support.copy()
    support[3, 1] = (support[3, 1] + 1) % 360
    _rewrite(path, support=support)
    with pytest.raises(BenchError, match=r"modified or is corrupted.*Delete it"):
        load_episodes(path)


def test_tampered_meta_detected(tmp_path):
    es = sample_episodes(make_labels(), spec(), FP)
    path = save_episodes(es, tmp_path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
    meta["data_fingerprint"] = "ffffffffffffffff"
    _rewrite(path, meta=np.array(json.dumps(meta)))
    with pytest.raises(BenchError, match="hash mismatch"):
        load_episodes(path)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(BenchError, match=str(bad)):
        load_episodes(bad)
    es = sample_episodes(make_labels(), spec(), FP)
    path = save_episodes(es, tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(BenchError, match="corrupted"):
        load_episodes(path)
    with pytest.raises(BenchError, match="No episode file"):
        load_episodes(tmp_path / "missing.npz")


def test_get_or_create_reuses_file(tmp_path):
    labels = make_labels()
    es1, path1, created1 = get_or_create_episodes(labels, spec(), FP, tmp_path)
    assert created1 and path1.exists()
    mtime = path1.stat().st_mtime_ns
    es2, path2, created2 = get_or_create_episodes(labels, spec(), FP, tmp_path)
    assert not created2 and path2 == path1 and path1.stat().st_mtime_ns == mtime
    assert es2.content_hash == es1.content_hash
    _, path3, created3 = get_or_create_episodes(labels, spec(seed=1), FP, tmp_path)
    assert created3 and path3 != path1


def test_get_or_create_detects_changed_data(tmp_path):
    labels = make_labels()
    get_or_create_episodes(labels, spec(), FP, tmp_path)
    with pytest.raises(BenchError, match="changed since the episodes"):
        get_or_create_episodes(labels, spec(), "another-fingerprint", tmp_path)


def test_get_or_create_detects_labels_mismatch(tmp_path):
    get_or_create_episodes(make_labels(seed=0), spec(), FP, tmp_path)
    with pytest.raises(BenchError, match="do not match the labels"):
        get_or_create_episodes(make_labels(seed=1), spec(), FP, tmp_path)


def test_get_or_create_detects_renamed_file(tmp_path):
    es = sample_episodes(make_labels(), spec(seed=1), FP)
    path = save_episodes(es, tmp_path)
    path.rename(tmp_path / f"{spec().key}.npz")
    with pytest.raises(BenchError, match="renamed or copied"):
        get_or_create_episodes(make_labels(), spec(), FP, tmp_path)


def test_episode_set_rejects_wrong_shapes():
    s = spec(episodes=2)
    with pytest.raises(ValueError):
        EpisodeSet(s, FP, np.zeros((2, 5)), np.zeros((2, 9)), np.zeros((2, 15)))


def test_data_set_names_that_sanitise_alike_get_different_files(tmp_path):
    """folder:/x/col a and folder:/x/col_a must not share (and refuse) one episode file."""
    a, b = spec(dataset="folder:/x/col a"), spec(dataset="folder:/x/col_a")
    assert a.key != b.key and "/" not in a.key and " " not in a.key
    assert a.key.startswith("folder__x_col_a-test-5w2s3q-200e-seed0-")
    assert spec().key == "emoji-test-5w2s3q-200e-seed0"  # stored files keep their names
    get_or_create_episodes(make_labels(), a, FP, tmp_path)
    _, path, created = get_or_create_episodes(make_labels(), b, FP, tmp_path)
    assert created and len(list(tmp_path.iterdir())) == 2


def test_a_copied_episode_file_names_the_differing_settings(tmp_path):
    path = save_episodes(sample_episodes(make_labels(), spec(seed=1), FP), tmp_path)
    path.rename(tmp_path / f"{spec().key}.npz")
    with pytest.raises(BenchError, match="seed: 1 in the file, 0 now"):
        get_or_create_episodes(make_labels(), spec(), FP, tmp_path)
