"""The ledger of rules changed after the data: every commit it names exists, every field is filled,
and the Markdown table has one row per entry."""
import dataclasses
import pathlib
import re
import subprocess

import pytest

from pipeline.claims.ledger import LEDGER, RuleChange, ledger_markdown

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def test_fields_non_empty_and_frozen():
    assert len(LEDGER) >= 5
    for e in LEDGER:
        for f in dataclasses.fields(RuleChange):
            assert str(getattr(e, f.name)).strip(), (e.commit, f.name)
        assert e.first != e.revised
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.claim = "x"


def test_commits_exist_with_their_dates():
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the ledger's commits cannot be checked")
    if _git("cat-file", "-e", "ffaf633^{commit}").returncode != 0 and _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("shallow clone: the ledger's commits are outside its history")
    for e in LEDGER:
        r = _git("log", "-1", "--format=%cs", e.commit)
        assert r.returncode == 0, f"{e.commit} is not in git log: {r.stderr}"
        assert r.stdout.strip() == e.date, e.commit


def test_markdown_table():
    md = ledger_markdown().splitlines()
    assert len(md) == 2 + len(LEDGER)
    # 7 unescaped pipes: six columns, whatever |dl/db| the rules quote
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 7 for line in md)
    assert all(f"`{e.commit}`" in md[i + 2] for i, e in enumerate(LEDGER))
