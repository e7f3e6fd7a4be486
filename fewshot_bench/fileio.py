"""Atomic file writes (a crash never leaves a half-written file under the final name) and
the lock that keeps two commands out of one output folder."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import BenchError

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path`; on success fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        os.replace(tmp, path)
    except BaseException as exc:
        if isinstance(exc, OSError):
            with contextlib.suppress(OSError):  # what was written before the disk filled up
                note_space_needed(exc, os.path.getsize(tmp), path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: str | Path, text: str) -> None:
    try:
        with atomic_open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        note_space_needed(exc, len(text.encode()), path)
        raise


def note_space_needed(exc: OSError, nbytes: int, path: str | Path | None = None) -> None:
    """Attach to a full-disk error the bytes the failed write needed (the largest known) and
    the path, for the message that `disk_full_message` makes of it; other errors pass."""
    if exc.errno != errno.ENOSPC:
        return
    exc.space_needed = max(getattr(exc, "space_needed", 0), int(nbytes))
    if path is not None and not exc.filename:
        exc.filename = str(path)


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}"


def disk_full_message(exc: OSError) -> str:
    """One paragraph for ENOSPC: the path, the space free on its file system now, and the
    space the failed write needed (at least; finishing the command needs more)."""
    where = f" writing {exc.filename}" if exc.filename else ""
    facts = []
    folder = Path(exc.filename).parent if exc.filename else None
    while folder is not None and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder is not None:
        with contextlib.suppress(OSError):
            facts.append(f"{_size(shutil.disk_usage(folder).free)} free on the file system "
                         f"of {folder}")
    needed = getattr(exc, "space_needed", 0)
    if needed:
        facts.append(f"that file needed at least {_size(needed)}")
    detail = f": {' and '.join(facts)}" if facts else ""
    return (f"the disk is full{where} ({exc.strerror}){detail}. Files written atomically "
            "are whole, and finished results are kept: free some space (a few times what is "
            "named here, since the command writes more after this file), then run the same "
            "command again (a run resumes).")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# One command per output folder
# --------------------------------------------------------------------------------------

LOCK = ".lock"  # in a folder while a command writes it (held with flock, removed after)


def folder_entries(folder: Path) -> list[Path]:
    """What `folder` holds, less a lock file: one left by a killed command is no content."""
    return [p for p in Path(folder).iterdir() if p.name != LOCK]


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the existing `folder` (flock on FOLDER/.lock, which names
    our pid) for the `with` block; BenchError naming the holder's pid when another process
    holds it. Never waits: two commands writing one folder would mix their results. The
    kernel drops the lock of a process that dies, so a stale file blocks nothing."""
    folder = Path(folder)
    path = folder / LOCK
    if fcntl is None:  # no flock on this platform: run unlocked, as before
        yield
        return
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise BenchError(f"Cannot write to the folder {folder} ({exc.strerror or exc}). "
                             "Pass a writable folder with --out.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BenchError(
                f"The folder {folder} is in use by another bench command (pid {holder}); two "
                "commands writing one folder would mix their results, so this one did "
                "nothing. Wait for that one to finish (or stop it), then run this command "
                "again; or choose another --out.") from None
        except OSError:  # a file system without flock (ENOLCK, ...): run unlocked
            os.close(fd)
            yield
            return
        # the holder before us removes the file before unlocking it: if we locked a removed
        # file, the lock guards nothing, so take the one now at `path` instead
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):  # first remove, then unlock (see above)
            os.unlink(path)
        os.close(fd)


def lock_new_folder(held: contextlib.ExitStack, folder: Path, taken: Callable[[], bool],
                    what: str) -> None:
    """Lock the new output `folder` for the rest of `held`; BenchError if another command
    began `what` (a run, a sweep) there while this one read its inputs (`taken()` true once
    the lock is ours)."""
    held.enter_context(folder_lock(folder))
    if taken():
        raise BenchError(f"Another bench command started {what} in {folder} while this one "
                         "was reading its inputs. Run this command again to resume it, or "
                         "choose another --out.")
