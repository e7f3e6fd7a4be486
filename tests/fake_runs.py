"""Fake `bench run` folders written directly (run.json, episodes.jsonl, embeddings.npz), so
report tests take milliseconds instead of a real run's seconds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from fewshot_bench.config import RunConfig


def accuracies(n: int, p: float, seed: int, nq: int = 75) -> np.ndarray:
    """n per-episode accuracies k/nq, like real episodes."""
    return np.random.default_rng(seed).binomial(nq, p, size=n) / nq


def write_run(path: Path, acc: dict[str, np.ndarray], *, episodes_hash: str | None = None,
              episodes_key: str | None = None, finished: bool = True, curves: int = 0,
              embeddings: dict[str, np.ndarray] | None = None, query_labels=None, class_names=None,
              failed: dict[str, list[int]] | None = None, **config) -> Path:
    """A run folder with the given per-episode accuracies per method (fractions).

    `config` overrides RunConfig fields (dataset, shots, lam, ...). The episode hash
    defaults to one derived from the setting, so runs of the same setting share episodes.
    `curves`: steps of a fake loss curve per trained method's episode; `embeddings`:
    {method: [E, n, D]} written as embeddings.npz (with `class_names` [E, N], as `bench run`
    saves them, when given); `failed`: {method: episode ids}.
    """
    path = Path(path)
    path.mkdir(parents=True)
    n = len(next(iter(acc.values())))
    cfg = RunConfig(methods=tuple(acc), episodes=n, **config).validate().to_dict()  # as bench run records it
    key = episodes_key or (f"{cfg['dataset']}-{cfg['split']}-{cfg['ways']}w{cfg['shots']}s"
                           f"{cfg['queries']}q-{n}e-seed{cfg['seed']}")
    h = episodes_hash or hashlib.sha256(key.encode()).hexdigest()
    record = {
        "config": cfg, "run_dir": str(path),
        "episodes": {"file": f"episodes/{key}.npz", "key": key, "content_hash": h,
                     "data_fingerprint": "fake"},
        "data": {"dataset": cfg["dataset"], "split": cfg["split"], "image_size": 32},
        "backbone": {"name": cfg["backbone"], "weights": None},
        "hardware": {"device": "cpu"},
        "git": {"commit": "0123456789abcdef", "dirty": False},
    }
    if finished:
        record["finished"] = "2026-01-01T00:00:00"
    (path / "run.json").write_text(json.dumps(record, indent=2))
    rng = np.random.default_rng(len(acc) + n)
    lines = []
    for m, a in acc.items():
        for e, v in enumerate(a):
            bad = failed is not None and e in failed.get(m, [])
            curve = None
            if curves and m != "protonet":
                start = 1.0 + rng.random()
                curve = [round(float(start * 0.8**s + 0.05 * rng.random()), 5) for s in range(curves)]
            lines.append(json.dumps({
                "episode": e, "method": m, "accuracy": None if bad else float(v),
                "loss_before": None, "loss_after": None, "seconds": 0.01,
                "status": "failed" if bad else "ok", "reason": "nan loss" if bad else "",
                "loss_curve": curve,
            }))
    (path / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    if embeddings:
        e = next(iter(embeddings.values())).shape[0]
        labels = query_labels if query_labels is not None else np.repeat(
            np.arange(cfg["ways"]), next(iter(embeddings.values())).shape[1] // cfg["ways"])
        extra = {} if class_names is None else {"class_names": np.asarray(class_names, dtype=str)}
        np.savez_compressed(path / "embeddings.npz", episodes=np.arange(e), query_labels=labels,
                            **{f"z_{m}": z.astype(np.float16) for m, z in embeddings.items()}, **extra)
    return path


def clustered(episodes: int, ways: int, per_class: int, dim: int, spread: float, seed: int) -> np.ndarray:
    """Unit-norm embeddings [episodes, ways*per_class, dim]: class centres plus noise of
    standard deviation `spread` per coordinate (small spread: well separated)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((episodes, ways, 1, dim))
    z = centres + spread * rng.standard_normal((episodes, ways, per_class, dim))
    z = z.reshape(episodes, ways * per_class, dim)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)
