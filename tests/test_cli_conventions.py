"""`bench` conventions: -h, help on every option, whole command summaries, --debug after
any subcommand, path checks at parse time, and `bench run --config FILE`."""

from __future__ import annotations

import json

import click
import pytest

from cli_helpers import explain, invoke
from fewshot_bench.cli import _commands, main
from fewshot_bench.config import RunConfig
from fewshot_bench.configfile import read_config_file
from fewshot_bench.errors import BenchError

COMMANDS = {cmd.name: cmd for cmd in _commands(main)}


def test_every_option_of_every_command_has_help():
    missing = [f"{name} {p.opts[0]}" for name, cmd in {"bench": main, **COMMANDS}.items()
               for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["data", "audit", "-h"]])
def test_dash_h_is_help(args):
    result = invoke(args)
    assert result.exit_code == 0 and result.stdout.startswith("Usage:"), explain(result)
    assert "--debug" in result.stdout


def test_the_command_list_shows_whole_summaries():
    text = " ".join(invoke(["--help"]).stdout.partition("Commands:")[2].split())
    assert "..." not in text
    assert "Fine-tune per episode with each method on the same stored episodes and compare." in text


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    result = invoke(["run", "--methods", "bogus", "--debug"], tmp_path)
    assert isinstance(result.exception, BenchError)
    result = invoke(["run", "--methods", "bogus"], tmp_path)
    assert result.exit_code == 2 and result.stderr.startswith("error: Unknown method")


def test_a_missing_weights_file_is_refused_when_parsing(tmp_path):
    result = invoke(["run", "--weights", str(tmp_path / "nope.pth")], tmp_path)
    assert result.exit_code == 2, explain(result)
    assert result.stderr.startswith("error: Invalid value for '--weights'")
    assert "does not exist" in result.stderr and "run -h` for help" in result.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "episodes").exists()


@pytest.fixture(scope="module")
def recorded(tiny, tmp_path_factory):
    """A finished tiny run with non-default settings, to reproduce from its run.json."""
    work = tmp_path_factory.mktemp("config")
    out = work / "old"
    result = invoke(tiny.args(work / "episodes", out, "--methods", "protonet,linear-probe",
                              "--lambda", "0.5", "--eval-steps", "1", "--seed", "3"), work)
    assert result.exit_code == 0, explain(result)
    return work, out


def _config(out) -> dict:
    return json.loads((out / "run.json").read_text())["config"]


def test_config_run_json_reproduces_the_run_and_flags_override_it(recorded):
    work, old = recorded
    for name, extra in (("same", []), ("fewer", ["--episodes", "2"])):
        result = invoke(["run", "--no-progress", "--config", str(old / "run.json"),
                         "--out", str(work / name), *extra], work)
        assert result.exit_code == 0, explain(result)
    before, same, fewer = _config(old), _config(work / "same"), _config(work / "fewer")
    assert {**same, "out": None} == {**before, "out": None}
    assert fewer["episodes"] == 2 and {**fewer, "out": None, "episodes": 4} == {**before, "out": None}
    assert RunConfig.from_dict(same).validate().methods == ("protonet", "linear-probe")


@pytest.mark.parametrize("text, message", [
    ("{not json", "Cannot read the configuration file"),
    ('["shots"]', "not an object of settings"),
    ('{"shot": 5}', "did you mean shots"),
    ('{"shots": "five"}', "--shots must be a whole number"),
])
def test_a_bad_config_file_exits_2_with_a_message(tmp_path, text, message):
    (tmp_path / "c.json").write_text(text)
    result = invoke(["run", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")],
                    tmp_path)
    assert result.exit_code == 2 and result.stderr.startswith("error: "), explain(result)
    assert message in result.stderr and not (tmp_path / "o").exists()


def test_config_file_names_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text('{"lambda": 0.3, "bank-views": 4, "methods": ["ce"]}')
    assert read_config_file(tmp_path / "c.json") == {"lam": 0.3, "bank_views": 4,
                                                     "methods": ["ce"]}
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("shots: 5\nmethods: ce,schane\n")
    assert read_config_file(tmp_path / "c.yaml") == {"shots": 5, "methods": "ce,schane"}
