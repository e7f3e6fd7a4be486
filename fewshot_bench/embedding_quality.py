"""Embedding quality of query embeddings: isotropy and class separation, plus a 2-D PCA.

SCHaNe's paper argues that its embeddings are more isotropic and better separated than
cross-entropy's. `bench run --embeddings N` stores the L2-normalised query embeddings of the
first N episodes per method (`embeddings.npz`); these functions score one episode's
embeddings X [n, D] (rows are points) with episode-local labels y [n]:

- `isotropy_entropy`: effective rank of the centred covariance, exp(H) / r, where
  H = -sum_j p_j log p_j over the covariance eigenvalues p_j = l_j / sum l (normalised to
  sum 1) and r = min(n - 1, D) is the largest rank n points in D dimensions can span
  (Roy & Vetterli 2007). 1: variance spread evenly over every available direction;
  1/r (about 0): all variance along one direction.
- `isotropy_partition`: the partition-function ratio of Mu & Viswanath (ICLR 2018,
  "All-but-the-top"), I = min_c Z(c) / max_c Z(c) with Z(c) = sum_i exp(c . x_i), c over
  the unit eigenvectors of X^T X and their negatives (an eigenvector's sign is arbitrary).
  Uncentred, as in the paper, so a mean direction shared by all points lowers it. 1: no
  preferred direction. For unit vectors |c . x_i| <= 1, so I >= e^-2 = 0.135, reached when
  every point is the same vector.
- `class_separation`: the mean silhouette (Rousseeuw 1987) with cosine distance
  d = 1 - cos: per point (b - a) / max(a, b), a = mean distance to its own class, b = the
  smallest mean distance to another class; a point alone in its class scores 0. In [-1, 1];
  higher means tighter, better separated classes.

Everything is computed in float64: the silhouette by scikit-learn, the spectra (isotropy,
PCA) with numpy's eigh of the smaller Gram matrix; nothing here needs torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import mean_ci
from .errors import BenchError

__all__ = [
    "isotropy_entropy",
    "isotropy_partition",
    "class_separation",
    "pca_2d",
    "episode_scores",
    "load_embeddings",
    "load_class_names",
    "embedding_scores",
    "SCORES",
]

# column name -> (short title, definition) for tables and docs/reports.md
SCORES = {
    "isotropy_entropy": ("isotropy (eigen-entropy)", "exp(H)/min(n-1, D) of the centred covariance's eigenvalues"),
    "isotropy_partition": ("isotropy (partition ratio)", "min_c Z(c) / max_c Z(c), Mu & Viswanath 2018"),
    "separation": ("class separation (silhouette)", "mean silhouette, cosine distance"),
}

_EPS = 1e-12


def _as_points(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise BenchError(f"Embeddings must be a 2-D array [points, dimensions]; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise BenchError("Embeddings contain NaN or infinite values; the run that saved them failed.")
    return x


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Eigen-decomposition of X^T X through the smaller Gram matrix (descending order).

    Returns (eigenvalues l [k], projections P [n, k] of the points on the unit eigenvectors
    c_k of X^T X (P[:, k] = X c_k), eigenvectors [D, k] or None when derived from X X^T).
    eigh of an n x n or D x D matrix, not an SVD of X: LAPACK's SVD is far slower when
    OpenBLAS threads compete for a few shared cores.
    """
    n, d = x.shape
    if n <= d:
        lam, u = np.linalg.eigh(x @ x.T)  # X X^T = U L U^T, X c_k = sqrt(l_k) u_k
        lam, u = np.clip(lam[::-1], 0.0, None), u[:, ::-1]
        return lam, u * np.sqrt(lam), None
    lam, v = np.linalg.eigh(x.T @ x)
    lam, v = np.clip(lam[::-1], 0.0, None), v[:, ::-1]
    return lam, x @ v, v


def isotropy_entropy(x) -> float:
    """exp(entropy of the normalised covariance spectrum) / min(n - 1, D), in (0, 1].

    nan for fewer than 2 points; 0 when all points coincide (no variance at all).
    """
    x = _as_points(x)
    n, d = x.shape
    if n < 2:
        return math.nan
    lam, _, _ = _spectrum(x - x.mean(axis=0))
    total = lam.sum()
    if total <= _EPS * max(1.0, float(np.abs(x).max()) ** 2):
        return 0.0
    p = lam[lam > total * 1e-10] / total
    h = float(-(p * np.log(p)).sum())
    return float(math.exp(h) / min(n - 1, d))


def isotropy_partition(x) -> float:
    """Mu & Viswanath's I = min_c Z(c) / max_c Z(c), c = +-eigenvectors of X^T X.

    When the points span fewer than D dimensions, every eigenvector c outside their span is
    orthogonal to all of them and has Z(c) = n exactly; that value is included.
    """
    x = _as_points(x)
    n, d = x.shape
    if n < 1:
        return math.nan
    _, proj, _ = _spectrum(x)  # [n, k]: c . x_i for each eigenvector c
    # log Z(c) for c and -c, computed stably
    logz = np.concatenate([_logsumexp(proj), _logsumexp(-proj)])
    if n < d:  # X^T X has D - n or more eigenvectors with eigenvalue 0
        logz = np.append(logz, math.log(n))
    return float(math.exp(logz.min() - logz.max()))


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=0)
    return m + np.log(np.exp(a - m).sum(axis=0))


def class_separation(x, labels) -> float:
    """Mean silhouette with cosine distance (1 - cosine similarity); in [-1, 1]
    (sklearn.metrics.silhouette_score). nan when there are fewer than 2 classes; 0 when
    every point is alone in its class (each such point scores 0)."""
    from sklearn.metrics import silhouette_score

    x = _as_points(x)
    y = np.asarray(labels).reshape(-1)
    if y.size != x.shape[0]:
        raise BenchError(f"{x.shape[0]} embeddings but {y.size} labels.")
    n_classes = np.unique(y).size
    if n_classes < 2:
        return math.nan
    if n_classes == y.size:  # sklearn refuses this case
        return 0.0
    return float(silhouette_score(x, y, metric="cosine"))


def pca_2d(x) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates [n, 2] on the first two principal components, their fraction of the
    total variance [2]). Signs are fixed so each component's largest loading is positive."""
    x = _as_points(x)
    xc = x - x.mean(axis=0)
    lam, proj, _ = _spectrum(xc)
    k = min(2, lam.size)
    coords = np.zeros((x.shape[0], 2))
    coords[:, :k] = proj[:, :k]
    loadings = xc.T @ coords  # [D, 2], proportional to the components
    for j in range(k):
        if loadings[np.abs(loadings[:, j]).argmax(), j] < 0:
            coords[:, j] *= -1
    frac = np.zeros(2)
    if lam.sum() > 0:
        frac[:k] = lam[:k] / lam.sum()
    return coords, frac


def episode_scores(x, labels) -> dict[str, float]:
    """All three scores of one episode's embeddings."""
    return {
        "isotropy_entropy": isotropy_entropy(x),
        "isotropy_partition": isotropy_partition(x),
        "separation": class_separation(x, labels),
    }


def load_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(episode ids [E], query labels [N*Q], {method: embeddings [E, N*Q, D]}) from a
    run's embeddings.npz."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            episodes = np.asarray(z["episodes"])
            labels = np.asarray(z["query_labels"])
            per_method = {k[2:]: np.asarray(z[k]) for k in z.files if k.startswith("z_")}
    except (OSError, KeyError, ValueError) as exc:
        raise BenchError(f"Cannot read the embeddings file {path} ({exc}). It is written by "
                         "`bench run --embeddings N`; re-run to recreate it.") from exc
    for m, arr in per_method.items():
        if arr.ndim != 3 or arr.shape[0] != episodes.size or arr.shape[1] != labels.size:
            raise BenchError(f"{path}: z_{m} has shape {arr.shape}, expected "
                             f"[{episodes.size}, {labels.size}, D]; the file is damaged.")
    return episodes, labels, per_method


def load_class_names(path: str | Path) -> np.ndarray | None:
    """The class names [E, N] of the saved episodes (episode class j of saved episode i),
    or None for a file written before they were saved (or unreadable ones)."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return np.asarray(z["class_names"]).astype(str) if "class_names" in z.files else None
    except (OSError, KeyError, ValueError):
        return None


def embedding_scores(embeddings: np.ndarray, labels: np.ndarray, episodes=None) -> pd.DataFrame:
    """One row per episode of `embeddings` [E, n, D]: episode and the three scores."""
    emb = np.asarray(embeddings)
    ids = np.arange(emb.shape[0]) if episodes is None else np.asarray(episodes)
    rows = [{"episode": int(e), **episode_scores(emb[i], labels)} for i, e in enumerate(ids)]
    return pd.DataFrame(rows, columns=["episode", *SCORES])


def summarise_scores(per_episode: pd.DataFrame) -> dict:
    """Mean and 95% CI half width over episodes of each score (keys <score>, <score>_ci95)."""
    out: dict = {"episodes": int(len(per_episode))}
    for col in SCORES:
        vals = per_episode[col].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        mean, half = mean_ci(vals)
        out[col], out[f"{col}_ci95"] = mean, half
    return out
