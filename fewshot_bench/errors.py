"""User-facing errors: the CLI prints their message and exits with status 2, no traceback."""


class BenchError(Exception):
    """Bad input the user can fix (unknown name, wrong ways/shots, missing file, ...).

    The message must say what was wrong and how to fix it, in one short paragraph.
    """


class RunFailed(Exception):
    """A run stopped on purpose (--fail-fast) after a numerical failure; exit status 1."""
