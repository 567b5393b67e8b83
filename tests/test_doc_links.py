"""Issue 20 item 8: every relative link in README.md, docs/*.md and the committed reports points to a
file that exists, and the report's table of contents links headings that exist.

Before: README.md linked `reports/deep/report.html`, which no study writes (deep writes report.md);
test_relative_links_resolve fails on such a link (it names the file and the target).

    .venv/bin/python -m pytest -q tests/test_doc_links.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pipeline.report.render import to_html
from pipeline.report.toc import TITLE, with_toc

REPO = Path(__file__).resolve().parents[1]
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""(?:href|src)=["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # http:, https:, mailto:, data:, ...


def _tracked(*patterns: str) -> list[Path]:
    """The files git tracks matching the patterns (the committed reports, not a local rebuild)."""
    out = subprocess.run(["git", "ls-files", "--", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / p for p in out.stdout.split()]


def documents() -> list[Path]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return docs + _tracked(
        "reports/*report.md", "reports/**/report.md", "reports/*report.html", "reports/**/report.html"
    )


def _without_code(text: str) -> str:
    """Markdown minus fenced blocks and inline code spans: `[x](y)` inside code is not a link."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = HTML_LINK.findall(text) if path.suffix == ".html" else MD_LINK.findall(_without_code(text))
    return [t for t in found if not EXTERNAL.match(t) and not t.startswith("#")]


def broken(path: Path) -> list[str]:
    return [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert broken(path) == [], f"{path.relative_to(REPO)} links files that do not exist"


def test_documents_are_found():
    # the check above must read the README, the docs and at least the default grid's committed report
    names = {str(p.relative_to(REPO)) for p in documents()}
    assert {"README.md", "docs/science.md", "reports/report.md"} <= names


def test_a_link_to_a_missing_report_is_caught(tmp_path):
    # the case: README linked reports/deep/report.html, which did not exist
    (tmp_path / "reports" / "deep").mkdir(parents=True)
    (tmp_path / "reports" / "deep" / "report.md").write_text("# deep\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [deep](reports/deep/report.html) and [md](reports/deep/report.md), "
        "`[code](nowhere.md)`, [web](https://example.org/x.md), [in page](#usage).\n"
    )
    assert broken(readme) == ["reports/deep/report.html"]


def test_contents_link_every_heading_in_md_and_html(tmp_path):
    text = (
        "# title\n\nintro\n\n## The answer\n\ntext\n\n## Verdicts\n\n### claim1: `b` cancels -- **holds**\n\n"
        "x\n\n```\n## not a heading\n```\n\n## Figures\n\n### b norm synthetic\n"
    )
    md = with_toc(text)
    assert md.index(f"## {TITLE}") < md.index("## The answer")  # before the first section
    contents = md[md.index(f"## {TITLE}") : md.index("## The answer")]
    targets = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(targets) == 5  # 3 sections + 2 subsections; the fenced "## not a heading" is no entry
    html = to_html(md, tmp_path)
    for t in targets:
        assert f'id="{t}"' in html, t  # each entry jumps to its heading in report.html
    assert "claim1-b-cancels----holds" in targets  # GitHub's slug of the rendered text (code and bold unwrapped)
