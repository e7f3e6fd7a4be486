"""The run folder: what a run writes, how a stopped run is read back and resumed.

`episodes.jsonl` is an append-only log: each finished group of episodes is appended,
flushed and fsynced, so a run killed at any moment (even by SIGKILL) leaves at worst a torn
last line, which `read_rows` detects and drops. Everything else is written atomically.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

from .config import RunConfig
from .errors import BenchError
from .fileio import write_atomic

ROWS = "episodes.jsonl"
RECORD = "run.json"
# Settings that may differ between the first start and a resume: where things are, what
# extra is saved, whether to stop on failure. Everything else must match (episode_batch
# too: it fixes the groups, and with them the last bits of float32 sums).
RESUME_FREE = {"out", "data_root", "episodes_dir", "embeddings", "fail_fast"}
# Settings added later, as the run.json files written before them ran: a resume of such a
# run must use these values.
BEFORE_ADDED = {"compile": False}


def check_output_dir(cfg: RunConfig, out: Path) -> dict | None:
    """Refuse an unusable results folder before any work, creating nothing.

    Returns the previous run record when `out` holds a stopped run with the same settings
    (the run then resumes), None for a new or empty folder.
    """
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder. Pass a new or empty folder.")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    record_path = out / RECORD
    if not record_path.is_file():
        raise BenchError(f"The results folder {out} already holds files but no {RECORD}, so it "
                         "is not a run to resume. Choose another --out (or leave --out out for "
                         "a new time-stamped folder).")
    try:
        previous = json.loads(record_path.read_text())
        before = previous["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"Cannot resume into {out}: its {RECORD} is unreadable ({exc}). "
                         "Choose another --out.") from exc
    now = cfg.to_dict()
    before = {**BEFORE_ADDED, **before}
    differing = [k for k in now if k not in RESUME_FREE and before.get(k) != now[k]]
    if differing:
        changes = "; ".join(f"{k}: {before.get(k)!r} then, {now[k]!r} now" for k in differing)
        if "compile" in differing and not before["compile"]:
            changes += " (pass --no-compile to resume it)"
        raise BenchError(f"Cannot resume into {out}: it was started with other settings "
                         f"({changes}). Rerun with the original settings to resume, or choose "
                         "another --out for a new run.")
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


def read_rows(path: Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of an episodes.jsonl log. A torn last line (a run killed mid-write) is dropped
    with a warning and cut from the file, so appending can go on; damage anywhere else is
    an error, since silently skipping results would bias the summary."""
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, good_end, pos = [], 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = "torn"
        if row == "torn" or end < 0:
            if end >= 0 and data[end + 1:].strip():
                raise BenchError(f"{path} is corrupt: line {len(rows) + 1} is not a result row. "
                                 "Move the folder aside and start the run again.")
            msg = f"dropped an incomplete last line of {path} (the run was stopped mid-write)"
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(msg)
            break
        if row is not None:
            rows.append(row)
        good_end = pos = end + 1
    if good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
    return rows


class RowLog:
    """Appends result rows to episodes.jsonl, durably, one group at a time."""

    def __init__(self, path: Path):
        self._file = open(path, "a")

    def append(self, rows: list[dict]) -> None:
        self._file.write("".join(json.dumps(r) + "\n" for r in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite the log in canonical order (episode, then method order), atomically, so an
    interrupted-and-resumed run ends with the same file as an uninterrupted one."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_record(out: Path, record: dict) -> None:
    write_atomic(out / RECORD, json.dumps(record, indent=2, default=str) + "\n")
