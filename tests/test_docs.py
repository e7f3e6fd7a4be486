"""The README stays short and its links work; the docs site builds strictly (issue 16).

The site itself (mkdocs.yml, `make docs`) checks every link and anchor between the pages
and every API name of docs/api.md; these tests check what it does not see (README.md,
which is no page of the site) and run the strict build when mkdocs is installed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 150

# [text](target) and ![alt](target), outside code spans
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans
    return LINK.findall(text)


def _github_slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading (the site uses the same, mkdocs.yml: toc)."""
    text = re.sub(r"<[^>]*>", "", unicodedata.normalize("NFC", heading)).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_github_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, (
        f"README.md has {n} lines, at most {MAX_README_LINES}: move the detail to a page "
        "under docs/ and link it from the README's map of the docs.")


def test_readme_keeps_the_two_commands():
    head = README.read_text().split("```", 2)[1]
    assert "make demo" in head and "make test" in head


def test_every_relative_link_of_the_readme_exists():
    bad = []
    for target in _links(README):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # https:, mailto:, ...; the README's own anchors: checked below
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve()
        if not file.exists():
            bad.append(f"{target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            bad.append(f"{target}: {path} has no heading with anchor #{anchor}")
    for target in _links(README):
        if target.startswith("#") and target[1:] not in _anchors(README):
            bad.append(f"{target}: README.md has no such heading")
    assert not bad, "broken links in README.md:\n" + "\n".join(bad)


def test_every_page_is_in_the_nav():
    nav = set(re.findall(r"^\s*-\s+(?:[^:\n]+:\s+)?([\w./-]+\.md)\s*$",
                         (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
             if "report-example" not in p.parts}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "mkdocs.yml's nav names pages that do not exist"


def test_no_link_into_the_readme_names_an_anchor():
    """The README's sections moved to docs/; README.md#... links would point nowhere."""
    hits = []
    for path in [*ROOT.glob("docs/**/*.md"), *ROOT.glob("fewshot_bench/**/*.py"),
                 *ROOT.glob("scripts/*"), *ROOT.glob("benchmarks/*"), *ROOT.glob("tests/*.py")]:
        if path.is_file() and path != Path(__file__).resolve():
            if re.search(r"(?<!benchmarks/)README\.md#", path.read_text(errors="ignore")):
                hits.append(str(path.relative_to(ROOT)))
    assert not hits


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                    or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs/mkdocstrings not installed (pip install -e .[docs])")
def test_the_docs_site_builds_strictly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "api.html").is_file()
    assert (tmp_path / "site" / "report-example" / "paired_scatter.png").is_file()
