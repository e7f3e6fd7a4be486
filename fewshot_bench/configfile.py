"""Run settings from a file, for `bench run --config FILE` and `fewshot_bench.run(FILE)`.

A file is a JSON object (or YAML, when PyYAML is installed) of RunConfig fields, named as
the fields (`lam`, `bank_views`) or as the options (`lambda`, `bank-views`). A run
folder, or its run.json, works as it is: its "config" key holds the fields of that run.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import fields
from pathlib import Path

from .config import RunConfig
from .errors import BenchError

_HOW = ("Write it as a JSON object of run settings such as {\"shots\": 5, \"methods\": "
        "\"ce,schane\"} (YAML too, with PyYAML installed), or pass a run folder's run.json.")


def field_name(key: str) -> str:
    """The RunConfig field a file key or keyword names: `bank-views` and `lambda` too."""
    key = str(key).strip().replace("-", "_")
    return "lam" if key == "lambda" else key


def check_fields(names, where: str) -> None:
    """BenchError naming the `names` that are not RunConfig fields (with the nearest one)."""
    known = [f.name for f in fields(RunConfig)]
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = [f"{n} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(n, known, 1))
                 else n for n in unknown]
        raise BenchError(f"Unknown setting(s) {', '.join(hints)} in {where}. Settings are "
                         f"RunConfig fields: {', '.join(known)}.")


def read_config_file(path: str | os.PathLike) -> dict:
    """The RunConfig fields a configuration file sets (BenchError when it is unusable).

    From a run folder's run.json every field of that run is returned, except `out` (that
    run's folder: a new run gets its own); fields the record predates take the values such
    runs ran with (results.BEFORE_ADDED), so the file reproduces the run it records."""
    from .results import BEFORE_ADDED, RECORD  # results imports pandas: only when used

    path = Path(path)
    if path.is_dir():
        path = path / RECORD
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise BenchError(f"{path} is YAML, and PyYAML is not installed: `pip install "
                                 "pyyaml`, or write the file as JSON.") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except BenchError:
        raise
    except Exception as exc:  # OSError, bad JSON/UTF-8, yaml.YAMLError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("\n")[0]
        raise BenchError(f"Cannot read the configuration file {path} ({why}). {_HOW}") from None
    if not isinstance(data, dict):
        raise BenchError(f"The configuration file {path} holds {type(data).__name__}, not an "
                         f"object of settings. {_HOW}")
    if isinstance(data.get("config"), dict):  # a run record: reproduce that run
        known = {f.name for f in fields(RunConfig)}
        values = {**BEFORE_ADDED, **data["config"]}
        return {k: v for k, v in values.items() if k in known and k != "out"}
    values = {field_name(k): v for k, v in data.items()}
    check_fields(values, str(path))
    return values
