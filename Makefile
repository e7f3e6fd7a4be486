# The two commands of the README. Both create .venv and install everything first
# (scripts/setup_env.sh; a second call only reinstalls the package itself).
.PHONY: demo test setup bench docs

setup:
	bash scripts/setup_env.sh

demo: setup
	.venv/bin/bench run --shots 1 --ways 5

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/speed.py

# The documentation site (mkdocs.yml) into site/, strictly: a broken link or anchor, or an
# API name mkdocstrings cannot find, fails the build.
docs: setup
	.venv/bin/mkdocs build --strict -d site
