"""Claim 4's mechanism as the report says it: the answer sentence's clauses (timing, where the twin itself fails,
what grows), the verdict's ratio endpoints shown in their own section, and the deep comparison's depth trend."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from pipeline.claims.answer import answer_text
from pipeline.claims.mechanism import GROWTH
from pipeline.claims.mechanism_text import mechanism_clause, twin_fails_from
from pipeline.spec.endpoints import Endpoint
from tests.test_claims import S, _about, _claim4_rows, judge


def test_the_claim4_sentence_says_sooner_where_the_twin_fails_and_what_grows():
    rows = _claim4_rows(5, 0, step=100.0) + _claim4_rows(5, 5, lr=3.0, step=10.0)  # the twin fails at lr 3 only
    v = judge("claim4", rows)
    grow = [
        Endpoint(measure=GROWTH, effect=g, n=5, unit="x", variant=var, dataset="digits", lr=lr, layer=0, over=over)
        for var, over, g, lr in (
            ("center_detached", None, 20.0, 1.0),
            ("center_detached", None, 3.0, 3.0),
            ("center", "twin of center_detached", 1.4, 1.0),
            ("center", "twin of center_detached", 1.1, 3.0),
        )
    ]
    v = replace(v, endpoints=[*v.endpoints, *grow])
    sentence = _about(answer_text([v], pd.DataFrame(rows), S), "claim4")
    assert "hazard of diverging was" in sentence and "times the twin's" in sentence
    assert "center itself diverged (half the seeds or more) at lr >= 3 on synthetic, lr >= 3 on digits" in sentence
    assert (
        "W along the input mean" in sentence
        and "x3-x20 under center_detached against x1.1-x1.4 under center on digits" in sentence
        and "not b" in sentence
    )
    # nothing to say: no divergence anywhere, no growth recorded -- no clause, no empty words
    quiet = _claim4_rows(0, 0)
    assert mechanism_clause(judge("claim4", quiet), pd.DataFrame(quiet), S) == ""


def test_twin_fails_only_from_an_lr_on_which_every_larger_lr_fails_too():
    rows = pd.DataFrame(_claim4_rows(0, 5, lr=0.3) + _claim4_rows(0, 1, lr=1.0) + _claim4_rows(0, 3, lr=3.0))
    assert twin_fails_from(rows, "center") == {"synthetic": 3.0, "digits": 3.0}
    assert twin_fails_from(pd.DataFrame(_claim4_rows(0, 2, lr=3.0)), "center") == {}


def test_ratio_endpoints_leave_the_verdict_list_for_the_claims_section():
    from pipeline.report.render import SECTIONS, _endpoints, listed_endpoints

    v = judge("claim4", _claim4_rows(5, 0))
    hr = [e for e in v.endpoints if e.unit == "hazard ratio"]
    assert hr and "claim4" in SECTIONS
    assert not any(e.unit == "hazard ratio" for e in listed_endpoints(v))
    assert f"{len(v.endpoints) - len(listed_endpoints(v))} ratio endpoints" in _endpoints(v)


def test_deep_comparison_says_the_depth_trend(tmp_path):
    from pipeline.compare import _largest_md, largest_by_setup

    setups = {}
    for name, depth, det, twin in (("d3", 3, 0.3, 1.0), ("d6", 6, float("nan"), 0.3)):
        tab = tmp_path / name / "tables"
        tab.mkdir(parents=True)
        pd.DataFrame(
            {
                "variant": ["center_detached", "center", "bn"],
                "dataset": "digits",
                "largest_trained_lr": [det, twin, 1.0],
            }
        ).to_csv(tab / "largest_trained_lr.csv", index=False)
        setups[name] = {
            "model": {"depth": depth, "width": 32},
            "optim": {"lrs": [0.03, 0.1, 0.3, 1.0]},
            "report": {"blowup_deciders": ["center_detached"], "twins": {"center_detached": ["center"]}},
        }
    t = largest_by_setup(tmp_path, setups)
    assert list(t["center_detached"]) == ["0.3", "< 0.03"] and list(t["center"]) == [">= 1", "0.3"]
    text = "\n".join(_largest_md(t))
    assert (
        "center_detached vs center: mlp 3x32, sgd (digits): 0.3 vs >= 1; mlp 6x32, sgd (digits): < 0.03 vs 0.3" in text
    )
