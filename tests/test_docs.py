"""The docs the code points to exist: every ``docs/NAME.md`` named in the package, the benches
and the README is a file, every ``docs/NAME.md, section `TITLE``` names a heading of that file,
and no source cites the design notes that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.joinpath("nas_reid").rglob("*.py"), *ROOT.joinpath("bench").glob("*.py"),
                  ROOT / "README.md"])
CITATION = re.compile(r"docs/([a-z_]+\.md)(?:,\s+sections?\s+`([^`]+)`)?")


def _headings(path: Path) -> set[str]:
    return {line.lstrip("#").strip().strip("`") for line in path.read_text().splitlines()
            if line.startswith("#")}


def _citations() -> list[tuple[str, str, str | None]]:
    out = []
    for source in SOURCES:
        for match in CITATION.finditer(source.read_text()):
            out.append((str(source.relative_to(ROOT)), match.group(1), match.group(2)))
    return out


def test_the_sources_cite_docs():
    assert len(_citations()) > 50  # the check below reads what it should


@pytest.mark.parametrize("source,doc,section", _citations())
def test_a_cited_doc_and_section_exist(source, doc, section):
    path = ROOT / "docs" / doc
    assert path.is_file(), f"{source} cites docs/{doc}, which does not exist"
    if section is not None:
        assert section in _headings(path), f"{source} cites docs/{doc}, section {section!r}: no such heading"


def test_no_source_cites_the_notes_outside_the_repository():
    outside = re.compile(r"\b(papers|reid|nas)\.md\b")
    found = [str(s.relative_to(ROOT)) for s in SOURCES if outside.search(s.read_text())]
    assert found == []
