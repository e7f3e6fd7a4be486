"""The run folder: what a run writes, how a stopped run is read back and resumed.

`episodes.jsonl` is an append-only log: each finished group of episodes is appended,
flushed and fsynced, so a run killed at any moment (even by SIGKILL) leaves at worst a torn
last line, which `read_rows` detects and drops. Everything else is written atomically.
Each row carries a checksum (`CHECK`), so a row edited by hand is refused on resume or
report instead of entering the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Callable

from .analysis import json_kind, row_problem
from .config import RunConfig
from .errors import BenchError
from .fileio import folder_entries, note_space_needed, write_atomic

ROWS = "episodes.jsonl"
RECORD = "run.json"
# Settings that may differ between the first start and a resume: where things are, what
# extra is saved, whether to stop on failure. Everything else must match (episode_batch
# too: it fixes the groups, and with them the last bits of float32 sums).
RESUME_FREE = {"out", "data_root", "episodes_dir", "embeddings", "fail_fast"}
# Settings added later, as the run.json files written before them ran: a resume of such a
# run must use these values.
BEFORE_ADDED = {"compile": False, "groups": "none", "schane_form": "perpos", "logreg_c": 1.0,
                "logreg_solver": "torch", "eval_steps": [], "head_lr_factor": 1.0}
# The shape of run.json, as far as readers use it: field -> JSON type. Only "config" is
# required (old and hand-made run folders lack the rest).
RECORD_FIELDS = {"config": dict, "episodes": dict, "data": dict, "backbone": dict,
                 "hardware": dict, "timing": dict, "resumed": list, "started": str,
                 "finished": str}
# A row's checksum field: the first 16 hex digits of the sha256 of the row's canonical JSON
# without it and without its wall time (two runs with the same results have the same
# checksums). Rows without one (runs written before it) are accepted as they are.
CHECK = "check"
_UNCHECKED = {CHECK, "seconds"}
_DAMAGED_RUN = ("It was edited or is not from `bench run`: restore it, or move the run "
                "folder aside and run again.")


def read_object(path: Path, fields: dict[str, type], required: tuple[str, ...] = (),
                fix: str = _DAMAGED_RUN) -> dict:
    """A JSON record file (run.json, sweep.json, finetune.json) as a dict whose `fields`
    present have their JSON type (bool is not a number); BenchError saying which field is
    wrong and `fix` otherwise, so callers can index it without checking each access."""
    try:
        record = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, bad UTF-8
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BenchError(f"{path} is unreadable ({why}). {fix}") from None
    if not isinstance(record, dict):
        raise BenchError(f"{path} is damaged: it holds {json_kind(record)}, not a JSON object. "
                         f"{fix}")
    for key in required:
        if key not in record:
            raise BenchError(f"{path} is damaged: it has no {key!r}. {fix}")
    for key, kind in fields.items():
        if key in record and not isinstance(record[key], kind):
            want = {dict: "an object", list: "a list", str: "a string"}[kind]
            raise BenchError(f"{path} is damaged: {key!r} is {json_kind(record[key])}, not "
                             f"{want}. {fix}")
    return record


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def read_record(path: Path) -> dict:
    """run.json, checked (see `read_object`): also config.episodes and the episode group
    (top-level, or under timing in older files) must be positive integers, as a resume
    uses them for the episode range and the group windows."""
    record = read_object(path, RECORD_FIELDS, required=("config",))
    if not _positive_int(record["config"].get("episodes")):
        raise BenchError(f"{path} is damaged: config.episodes is "
                         f"{record['config'].get('episodes')!r}, not a positive integer. "
                         f"{_DAMAGED_RUN}")
    for where, value in (("episode_batch", record.get("episode_batch", 1)),
                         ("timing.episode_batch",
                          record.get("timing", {}).get("episode_batch") or 1)):
        if not _positive_int(value):
            raise BenchError(f"{path} is damaged: {where} is {value!r}, not a positive "
                             f"integer (the episode group a resume keeps). {_DAMAGED_RUN}")
    return record


def check_output_dir(cfg: RunConfig, out: Path) -> dict | None:
    """Refuse an unusable results folder before any work, creating nothing.

    Returns the previous run record when `out` holds a stopped run with the same settings
    (the run then resumes), None for a new or empty folder, or one whose run stopped before
    its first result (a failed attempt, replaced whatever its settings).
    """
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder. Pass a new or empty folder.")
    if not out.is_dir() or not folder_entries(out):
        return None
    record_path = out / RECORD
    if not record_path.is_file():
        raise BenchError(f"The results folder {out} already holds files but no {RECORD}, so it "
                         "is not a run to resume. Choose another --out (or leave --out out for "
                         "a new time-stamped folder).")
    previous = read_record(record_path)
    now = cfg.to_dict()
    before = {**BEFORE_ADDED, **previous["config"]}
    differing = [k for k in now if k not in RESUME_FREE and before.get(k) != now[k]]
    if differing and not has_results(out):
        return None  # nothing to keep: the corrected command starts it afresh
    if differing:
        changes = "; ".join(f"{k}: {before.get(k)!r} then, {now[k]!r} now" for k in differing)
        if "compile" in differing and not before["compile"]:
            changes += " (pass --no-compile to resume it)"
        if "schane_form" in differing:
            changes += (" (`schane` was the per-positive form then, now the authors' loss: "
                        "this run cannot be resumed by this version)")
        raise BenchError(f"Cannot resume into {out}: it was started with other settings "
                         f"({changes}). Rerun with the original settings to resume, or choose "
                         "another --out for a new run.")
    return previous


def has_results(folder: Path) -> bool:
    """Whether any result row log in `folder` (or below it) has something in it."""
    return any(p.stat().st_size for p in Path(folder).rglob(ROWS) if p.is_file())


def own_folder_record(out: Path, record: str, kind: str, command: str, fix: str,
                      fields: dict[str, type]) -> dict | None:
    """The record file `record` of `out` when `out` is a folder `command` wrote (its "kind"
    field is `kind`; the first of `fields` must be present); None for a new or empty folder;
    BenchError (ending in `fix`) for a file, a foreign folder or a damaged record, so nothing
    of someone else's is touched."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder. Pass a new or empty folder.")
    if not out.is_dir() or not folder_entries(out):
        return None
    if not (out / record).is_file():
        raise BenchError(f"The folder {out} already holds files but is not the output of "
                         f"`{command}` (no {record}), so nothing is written there. {fix}")
    previous = read_object(out / record, fields, required=tuple(fields)[:1], fix=fix)
    if previous.get("kind") != kind:
        raise BenchError(f"The folder {out} already holds files but is not the output of "
                         f"`{command}` ({record} is of another kind), so nothing is written "
                         f"there. {fix}")
    return previous


def create_output_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"Cannot write to the results folder {out} ({exc.strerror}). "
                         "Pass a writable folder with --out.") from exc
    return out


def read_rows(path: Path, warn: Callable[[str], None] | None = None, *,
              episodes: int | None = None, repair: bool = True) -> list[dict]:
    """Rows of an episodes.jsonl log, each checked (`analysis.row_problem`: episode in
    [0, `episodes`) when given, ...) and no (episode, method) twice.

    A torn last line (a run killed mid-write) is dropped with a warning and, with `repair`
    (the run that appends to it), cut from the file so appending can go on; readers pass
    repair=False (a running run may be writing that line). Damage anywhere else is an
    error, since silently skipping results would bias the summary."""
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:  # a folder, unreadable, ...
        raise BenchError(f"Cannot read {path} ({exc.strerror or exc}): it should be the run's "
                         "result log, a file. Move it aside (the run then starts over).") from None
    rows, seen, good_end, pos, line_no = [], {}, 0, 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        line_no += 1
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:  # bad JSON or bad UTF-8
            row = "torn"
        if row == "torn" or end < 0:
            if end >= 0 and data[end + 1:].strip():
                raise BenchError(f"{path} is corrupt: line {line_no} is not a result row. "
                                 "Delete that line (a resume recomputes it), or move the "
                                 "folder aside and start the run again.")
            msg = f"dropped an incomplete last line of {path} (the run was stopped mid-write)"
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(msg)
            break
        if row is not None:
            problem = row_problem(row, episodes)
            key = None if problem else (row["episode"], row["method"])
            if key in seen:
                problem = (f"it repeats episode {key[0]} of {key[1]} from line {seen[key]}")
            elif not problem and CHECK in row and row[CHECK] != row_checksum(row):
                problem = ("it was edited after the run wrote it (its checksum does not "
                           "match its values)")
            if problem:
                raise BenchError(f"{path} line {line_no} is damaged: {problem}. Delete that "
                                 "line (a resume recomputes it), or move the run folder "
                                 "aside and run again.")
            seen[key] = line_no
            rows.append(row)
        good_end = pos = end + 1
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
    return rows


def row_checksum(row: dict) -> str:
    """The checksum of a result row (see `CHECK`)."""
    body = {k: v for k, v in row.items() if k not in _UNCHECKED}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _lines(rows: list[dict]) -> str:
    """The log lines of `rows`, each given its checksum (in place: callers keep the rows)."""
    for r in rows:
        r[CHECK] = row_checksum(r)
    return "".join(json.dumps(r) + "\n" for r in rows)


class RowLog:
    """Appends result rows to episodes.jsonl, durably, one group at a time."""

    def __init__(self, path: Path):
        self._file = open(path, "a")

    def append(self, rows: list[dict]) -> None:
        text = _lines(rows)
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:  # a full disk: a resume drops the cut-off last line
            note_space_needed(exc, len(text.encode()), self._file.name)
            raise

    def close(self) -> None:
        self._file.close()


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite the log in canonical order (episode, then method order), atomically, so an
    interrupted-and-resumed run ends with the same file as an uninterrupted one."""
    write_atomic(path, _lines(rows))


def write_record(out: Path, record: dict) -> None:
    write_atomic(out / RECORD, json.dumps(record, indent=2, default=str) + "\n")
