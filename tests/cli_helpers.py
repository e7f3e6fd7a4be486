"""Running `bench` in tests: click's CliRunner in a given folder, and a readable failure."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from fewshot_bench.cli import main


def invoke(args: list[str], cwd: Path | None = None):
    """`bench ARGS` through click's CliRunner, run from `cwd` when given."""
    with pytest.MonkeyPatch.context() as mp:
        if cwd is not None:
            mp.chdir(cwd)
        return CliRunner().invoke(main, list(args))


def explain(result) -> str:
    """What to show when a CLI assertion fails: exit code, output and any traceback."""
    exc = result.exception
    tb = ""
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{tb}"
