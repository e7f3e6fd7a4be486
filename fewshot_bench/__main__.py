"""`bench` and `python -m fewshot_bench`: the CLI, with Ctrl-C while it loads (numpy, click:
about a second) answered by one line instead of a traceback. Inside a command the CLI
itself handles Ctrl-C (cli.BenchGroup)."""

from __future__ import annotations

import sys


def main() -> int | None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting: nothing was done.\n")
        return 130
    return cli_main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
