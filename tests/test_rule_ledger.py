"""The ledger of rules changed after the data: every commit it names exists, every field is filled,
the Markdown table has one row per entry, every claim it names computes its status under the
replaced rule, and the report prints it."""

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
            if f.name != "key":  # optional: the legacy key defaults to the commit
                assert str(getattr(e, f.name)).strip(), (e.commit, f.name)
        assert e.claims and e.legacy_key
        assert e.first != e.revised
        with pytest.raises(dataclasses.FrozenInstanceError):
            e.claim = "x"


def test_commits_exist_with_their_dates():
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the ledger's commits cannot be checked")
    if (
        _git("cat-file", "-e", "ffaf633^{commit}").returncode != 0
        and _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    ):
        pytest.skip("shallow clone: the ledger's commits are outside its history")
    for e in LEDGER:
        r = _git("log", "-1", "--format=%cs", e.commit)
        assert r.returncode == 0, f"{e.commit} is not in git log: {r.stderr}"
        assert r.stdout.strip() == e.date, e.commit


def test_markdown_table():
    md = ledger_markdown().splitlines()
    assert len(md) == 2 + len(LEDGER)
    # 8 unescaped pipes: seven columns, whatever |dl/db| the rules quote
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 8 for line in md)
    assert all(f"`{e.commit}`" in md[i + 2] for i, e in enumerate(LEDGER))


def test_every_named_claim_computes_its_status_under_the_replaced_rule():
    """Each ledger row's claims: the judge reports the verdict under the rule the row replaced, so the
    report can print 'status under the replaced rule -> now' (a missing one reads 'not computed')."""
    import pandas as pd

    from pipeline.claims import evaluate_all
    from pipeline.config import ReportSettings

    members = pd.read_csv(ROOT / "reports" / "tables" / "members.csv")
    verdicts = {v.key: v for v in evaluate_all(members, None, ReportSettings())}
    for e in LEDGER:
        for claim in e.claims:
            assert claim in verdicts, (e.commit, claim)
            assert verdicts[claim].legacy.get(e.legacy_key), (e.commit, claim, verdicts[claim].legacy)
    md = ledger_markdown(list(verdicts.values()))
    assert "not computed" not in md and all(f"{k}: " in md for k in ("claim1b", "claim4", "claim5"))
