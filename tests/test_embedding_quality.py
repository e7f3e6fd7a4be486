"""Isotropy and class-separation scores on inputs whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fake_runs import clustered
from fewshot_bench.embedding_quality import (
    class_separation,
    embedding_scores,
    episode_scores,
    isotropy_entropy,
    isotropy_partition,
    load_class_names,
    load_embeddings,
    pca_2d,
)
from fewshot_bench.errors import BenchError


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_isotropic_gaussian_scores_near_one(rng):
    x = unit(rng.standard_normal((4000, 16)))
    assert isotropy_entropy(x) > 0.98
    assert isotropy_partition(x) > 0.9
    # fewer points than dimensions (an episode: 75 queries, 1280 features)
    y = unit(rng.standard_normal((75, 1280)))
    assert isotropy_entropy(y) > 0.95


def test_rank_one_cloud_scores_near_zero(rng):
    v = rng.standard_normal(64)
    x = np.outer(rng.normal(3.0, 1.0, 500), v)  # every point on one line
    assert isotropy_entropy(x) == pytest.approx(1 / 64, abs=1e-9)  # exp(0) / min(n-1, D)
    assert isotropy_partition(x) < 1e-6
    # unit vectors all pointing the same way reach the partition ratio's floor e^-2
    same = np.tile(unit(v), (50, 1))
    assert isotropy_partition(same) == pytest.approx(math.exp(-2), rel=1e-9)
    assert isotropy_entropy(same) == 0.0  # no variance at all


def test_isotropy_orders_clouds_by_anisotropy(rng):
    scales = [np.ones(32), np.linspace(1, 0.1, 32), np.r_[10.0, np.full(31, 0.1)]]
    ent = [isotropy_entropy(rng.standard_normal((2000, 32)) * s) for s in scales]
    pf = [isotropy_partition(unit(rng.standard_normal((2000, 32)) * s + 0.3 * (i > 0)))
          for i, s in enumerate(scales)]
    assert ent[0] > ent[1] > ent[2]
    assert pf[0] > pf[2]


def test_partition_ratio_matches_a_slow_loop(rng):
    x = unit(rng.standard_normal((30, 6)) + 0.5)
    w, vecs = np.linalg.eigh(x.T @ x)
    zs = [np.exp(x @ (s * vecs[:, i])).sum() for i in range(6) for s in (1, -1)]
    assert isotropy_partition(x) == pytest.approx(min(zs) / max(zs), rel=1e-10)


def test_entropy_score_matches_its_definition(rng):
    x = rng.standard_normal((40, 5)) * np.array([3, 2, 1, 1, 0.5])
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    p = lam / lam.sum()
    assert isotropy_entropy(x) == pytest.approx(np.exp(-(p * np.log(p)).sum()) / 5, rel=1e-10)


def test_well_separated_clusters_score_higher(rng):
    y = np.repeat(np.arange(5), 15)
    tight = clustered(1, 5, 15, 64, 0.1, 1)[0]
    loose = clustered(1, 5, 15, 64, 2.0, 1)[0]
    mixed = unit(rng.standard_normal((75, 64)))
    s_tight, s_loose, s_mixed = (class_separation(z, y) for z in (tight, loose, mixed))
    assert s_tight > 0.8
    assert s_tight > s_loose > s_mixed
    assert abs(s_mixed) < 0.1


def test_silhouette_matches_a_slow_loop(rng):
    x = rng.standard_normal((12, 4))
    y = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])  # class 3 has one point: scores 0
    u = unit(x)
    d = 1 - u @ u.T
    sil = []
    for i in range(12):
        own = [j for j in range(12) if y[j] == y[i] and j != i]
        if not own:
            sil.append(0.0)
            continue
        a = np.mean(d[i, own])
        b = min(np.mean(d[i, y == c]) for c in set(y) if c != y[i])
        sil.append((b - a) / max(a, b))
    assert class_separation(x, y) == pytest.approx(np.mean(sil), rel=1e-10)
    assert math.isnan(class_separation(x, np.zeros(12)))
    assert class_separation(x, np.arange(12)) == 0.0  # every point alone in its class


def test_pca_2d_projects_on_the_main_directions(rng):
    x = rng.standard_normal((200, 10)) * np.r_[5.0, 2.0, np.full(8, 0.1)]
    coords, frac = pca_2d(x)
    assert coords.shape == (200, 2)
    assert frac[0] > frac[1] > 0 and frac.sum() > 0.95
    assert np.corrcoef(coords[:, 0], x[:, 0])[0, 1] ** 2 > 0.99


def test_scores_of_saved_embeddings(tmp_path):
    z = clustered(3, 5, 3, 32, 0.3, 0)
    labels = np.repeat(np.arange(5), 3)
    path = tmp_path / "embeddings.npz"
    np.savez_compressed(path, episodes=np.arange(3), query_labels=labels,
                        z_ce=z.astype(np.float16), z_schane=z.astype(np.float16))
    episodes, y, per_method = load_embeddings(path)
    assert sorted(per_method) == ["ce", "schane"] and list(episodes) == [0, 1, 2]
    table = embedding_scores(per_method["ce"], y, episodes)
    assert len(table) == 3
    assert table.iloc[1]["separation"] == pytest.approx(episode_scores(z[1], labels)["separation"], abs=1e-2)
    np.savez(path, episodes=np.arange(2), query_labels=labels, z_ce=z)
    with pytest.raises(BenchError, match="damaged"):
        load_embeddings(path)
    with pytest.raises(BenchError, match="NaN"):
        isotropy_entropy(np.full((3, 3), np.nan))


def test_class_names_are_read_when_the_run_saved_them(tmp_path):
    labels = np.repeat(np.arange(2), 3)
    z = np.zeros((2, 6, 4), dtype=np.float16)
    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    np.savez(old, episodes=np.arange(2), query_labels=labels, z_ce=z)
    np.savez(new, episodes=np.arange(2), query_labels=labels, z_ce=z,
             class_names=np.array([["cat", "dog"], ["owl", "cat"]]))
    assert load_class_names(old) is None
    assert load_class_names(new).tolist() == [["cat", "dog"], ["owl", "cat"]]
    assert set(load_embeddings(new)[2]) == {"ce"}  # not taken for a method's embeddings
