"""A table of contents for report.md / report.html: the report is ~18,000 px tall in a browser, and a
reader looking for one claim's figure should not scroll for it.

    from pipeline.report.toc import with_toc
    text = with_toc(markdown_text)   # "## Contents" inserted before the first "## " heading

Each entry links the heading's anchor as GitHub spells it and as render.to_html writes it (the same
slug of the heading's rendered text), so the links work in both files. Levels 2 and 3 only: those are
the headings to_html gives ids.
"""

from __future__ import annotations

import re

TITLE = "Contents"
_HEADING = re.compile(r"^(#{2,3}) (.+?)\s*#*\s*$")


def headings(markdown_text: str) -> list[tuple[int, str]]:
    """(level, raw text) of every level-2 and -3 heading outside fenced code."""
    out, fenced = [], False
    for line in markdown_text.splitlines():
        if line.startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := _HEADING.match(line)):
            out.append((len(m.group(1)), m.group(2)))
    return out


def anchor(text: str) -> str:
    """The id of a heading whose Markdown is `text`: the slug of its rendered inline HTML."""
    from markdown_it import MarkdownIt

    return slug(MarkdownIt("commonmark").renderInline(text))


def toc_lines(markdown_text: str) -> list[str]:
    lines = [f"## {TITLE}", ""]
    for level, text in headings(markdown_text):
        label = re.sub(r"[\[\]]", "", text)  # brackets would end the link text early
        lines.append(f"{'  ' * (level - 2)}- [{label}](#{anchor(text)})")
    return lines + [""]


def with_toc(markdown_text: str) -> str:
    """`markdown_text` with its contents inserted before its first level-2 heading (unchanged if none)."""
    lines = markdown_text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith("## ")), None)
    if first is None:
        return markdown_text
    return "\n".join(lines[:first] + toc_lines(markdown_text) + lines[first:])


def slug(html_text: str) -> str:
    """A heading's anchor from its HTML: tags dropped, entities decoded, lower case, spaces to '-'
    (the ids render.to_html gives the report's headings, and the links the contents list uses)."""
    import html

    text = html.unescape(re.sub(r"<[^>]+>", "", html_text)).lower()
    return "".join(ch for ch in text if ch.isalnum() or ch in " -_").replace(" ", "-")
