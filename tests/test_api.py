"""The Python interface: `fewshot_bench.run` and `fewshot_bench.load_runs`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import fewshot_bench as fb
from fewshot_bench.episodes import COMMITTED_EPISODES, EpisodeSpec, default_episodes_dir
from fewshot_bench.errors import BenchError


@pytest.fixture(scope="module")
def api_run(tiny, tmp_path_factory):
    """One tiny `fb.run` from an empty working folder, temporary folders under tmp."""
    work, tmp = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setattr(tempfile, "tempdir", str(tmp))
        result = fb.run(**tiny.options, device="cpu", methods="protonet,ce", progress=False,
                        echo=None)
    return result, work, tmp


def test_run_writes_nowhere_but_a_temporary_folder_and_the_cache(api_run, tiny):
    result, work, tmp = api_run
    assert list(work.iterdir()) == []  # nothing in the current folder
    assert result.out_dir.parent == tmp and (result.out_dir / "run.json").is_file()
    episode_file = os.path.join(os.environ["FEWSHOT_CACHE"], "episodes",
                                "emoji-test-5w1s3q-4e-seed0-grouped.npz")
    assert os.path.isfile(episode_file)
    assert len(result.rows) == 2 * tiny.options["episodes"]
    assert result.rows["accuracy"].between(0, 1).all()  # fractions; the summary is percent
    assert set(result.method_table["method"]) == {"protonet", "ce"}


def test_committed_episodes_are_used_when_they_hold_the_spec(tmp_path):
    committed = EpisodeSpec("emoji", "test", 5, 1, 15, 600, 0, None, True)
    assert (COMMITTED_EPISODES / f"{committed.key}.npz").is_file()
    assert default_episodes_dir(committed) == COMMITTED_EPISODES
    other = EpisodeSpec("emoji", "test", 5, 1, 15, 7, 0, None, True)
    assert default_episodes_dir(other) == Path(os.environ["FEWSHOT_CACHE"]) / "episodes"


def test_load_runs_is_one_tidy_frame_with_the_settings(api_run, tiny):
    result, _, tmp = api_run
    df = fb.load_runs(str(tmp / "*"))  # a glob; a folder or a list work too
    assert len(df) == len(result.rows) and df["run"].nunique() == 1
    first = df.iloc[0]
    assert (first["dataset"], first["ways"], first["shots"], first["steps"]) == (
        "emoji", 5, 1, tiny.options["steps"])
    assert first["image_size"] == 32 and first["finished"] and len(first["episodes_hash"]) == 64
    assert (df["accuracy_pct"] == 100 * df["accuracy"]).all()
    assert {"episode", "method", "status", "tune", "lr", "lam"} <= set(df.columns)
    assert len(fb.load_runs([result.out_dir])) == len(df)


def test_bad_settings_are_refused_before_any_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(BenchError, match="--shots must be a whole number"):
        fb.run(shots="five")
    with pytest.raises(BenchError, match="did you mean shots"):
        fb.run(shot=5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BenchError, match="No run folders match"):
        fb.load_runs(str(tmp_path / "*"))


def test_public_names_are_documented():
    for name in fb.__all__:
        obj = getattr(fb, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
