"""The Python interface: `run` a benchmark, `load_runs` of finished run folders.

Light on imports (torch, pandas and the runner are imported when called), so that
`import fewshot_bench` and `bench --help` stay fast.
"""

from __future__ import annotations

import glob
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RunConfig
from .configfile import check_fields, field_name, read_config_file
from .errors import BenchError

if TYPE_CHECKING:
    import pandas as pd

    from .runner import RunResult

ConfigLike = RunConfig | Mapping | str | os.PathLike | None


def make_config(config: ConfigLike = None, **options) -> RunConfig:
    """A validated RunConfig from `config` (a RunConfig, a mapping of fields, or a
    configuration file or run folder as for `bench run --config`) with `options` (fields,
    as keywords) replacing its values. BenchError for an unknown field or a bad value."""
    if config is None:
        base = {}
    elif isinstance(config, RunConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = {field_name(k): v for k, v in config.items()}
        check_fields(base, "config")
    elif isinstance(config, (str, os.PathLike)):
        base = read_config_file(config)
    else:
        raise BenchError(f"config must be a RunConfig, a dict of its fields or a configuration "
                         f"file (got {type(config).__name__}).")
    options = {field_name(k): v for k, v in options.items()}
    check_fields(options, "the keyword arguments")
    return RunConfig(**{**base, **options}).validate()


def run(config: ConfigLike = None, /, *, progress: bool = True,
        echo: Callable[[str], None] | None = print, **options) -> RunResult:
    """Run a benchmark, as `bench run` does, and return its RunResult.

    `options` are RunConfig fields (`fb.run(dataset="emoji", shots=5, methods="ce,schane")`;
    strings are converted as `bench run` would); `config` is a starting point they
    override: a RunConfig, a dict, or a JSON/YAML file or a run folder (its run.json), as
    for `bench run --config`. Nothing is written into the current folder unless asked:

    - `out=None` (the default): the results go to a new temporary folder, `result.out_dir`
      (delete it when done, or pass `out=` to keep them; an `out` holding a stopped run of
      the same settings resumes it, as with `bench run`);
    - `episodes_dir=None` (the default): the episode files committed with the source
      (episodes/ of a checkout) when they hold this run's episodes, so results pair with
      the published ones; else `episodes/` in the user cache ($FEWSHOT_CACHE, else
      ~/.cache/fewshot-bench), where new episodes are sampled and kept for the next run.

    `progress`: show progress bars; `echo`: where the run's messages go (None: nowhere).
    Units: `result.rows["accuracy"]` is a fraction in [0, 1] per (episode, method);
    `result.method_table` (mean, ci95, std) is in percent and `result.paired_table`
    (mean_diff, ci95) in percentage points. BenchError for bad settings, before any work.
    """
    cfg = make_config(config, **options)  # every value checked before a folder is made
    if cfg.out is None:
        cfg.out = tempfile.mkdtemp(prefix="fewshot-bench-")
    from .runner import run as run_benchmark  # torch: only now

    return run_benchmark(cfg, progress=progress, echo=echo or (lambda _msg: None))


def _expand(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Paths with their glob patterns expanded. A pattern keeps only what may be a run
    folder (results/* also matches baselines/ and files); a plain path is kept as it is, so
    that a missing or wrong one is reported."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    for p in map(os.fspath, paths):
        p = os.path.expanduser(p)
        if not glob.has_magic(p):
            found.append(p)
            continue
        matches = [m for m in sorted(glob.glob(p)) if _holds_runs(Path(m))]
        if not matches:
            raise BenchError(f"No run folders match {p}. Pass folders written by `bench run` "
                             "(or a pattern such as results/*).")
        found += matches
    return found


def _holds_runs(path: Path) -> bool:
    return path.is_dir() and ((path / "run.json").is_file()
                              or any((c / "run.json").is_file() for c in path.iterdir()))


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every per-episode result of the given run folders as one tidy DataFrame.

    `paths`: a run folder, a folder holding run folders (as for `bench report`), a glob
    pattern such as "results/*", or a list of these. One row per (run, episode, method):

    - `run`: the run folder; `finished`: whether that run finished;
    - the run's settings, one column per RunConfig field except `methods` and `out`
      (dataset, split, ways, shots, queries, episodes, seed, backbone, tune, lr, steps, lam,
      ...; fields a run predates take the values such runs ran with, else None);
      `image_size` is the input size used, also where the run left it to the backbone;
    - `episodes_hash`: the episode file's content hash (equal hashes: paired episodes);
    - the result row: episode, method, accuracy (a fraction in [0, 1]; None for a failed
      episode), accuracy_pct (the same in percent), status, reason, seconds, loss_before,
      loss_after, loss_curve, and accuracy_at_steps with --eval-steps.

    Runs that did not finish are included, with a warning saying so.
    """
    import pandas as pd

    from .report.runs import find_run_dirs, load_run  # the report's own loader
    from .results import BEFORE_ADDED

    settings = [f.name for f in fields(RunConfig) if f.name not in ("methods", "out")]
    frames = []
    run_dirs = find_run_dirs(_expand(paths))
    if not run_dirs:
        raise BenchError("load_runs was given no run folders. Pass folders written by `bench "
                         "run`, or a pattern such as results/*.")
    for path in run_dirs:
        run_ = load_run(path)
        for note in run_.notes:
            warnings.warn(note, stacklevel=2)
        values = {k: run_.config.get(k, BEFORE_ADDED.get(k)) for k in settings}
        values["eval_steps"] = tuple(values["eval_steps"] or ())  # hashable, for groupby
        values["image_size"] = run_.setting["image_size"]
        rows = run_.rows.copy()
        rows.insert(0, "run", str(path))
        rows.insert(1, "finished", run_.finished)
        for i, (k, v) in enumerate({**values, "episodes_hash": run_.content_hash}.items()):
            rows.insert(2 + i, k, [v] * len(rows))  # a list: a tuple value is one cell
        at = rows.columns.get_loc("accuracy") + 1
        rows.insert(at, "accuracy_pct", 100 * pd.to_numeric(rows["accuracy"]))
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)
