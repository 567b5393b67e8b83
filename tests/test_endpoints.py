"""An endpoint's identity is its fields, not its display text: the text is derived from the fields,
endpoints match by key, the endpoints table round-trips through its owner, and a Claim is built by
keyword and names its primary endpoint (identity) or its primary tests (measurement)."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from pipeline.claims import PASSED, REGISTRY, Claim, Endpoint, Judgement
from pipeline.claims.endpoint_table import endpoint_frame, endpoints_of, read_endpoint_table
from pipeline.compare import collect, matched
from pipeline.config import ReportSettings
from pipeline.spec.endpoints import TABLE_COLUMNS

NAN = float("nan")


def excess(**kw) -> Endpoint:
    base = dict(
        measure="excess blow-up rate (detached minus twin)",
        effect=0.2,
        lo=0.0,
        hi=0.6,
        n=5,
        unit="fraction",
        variant="center_detached",
        twin="center",
        dataset="digits",
        lr=1.0,
    )
    return Endpoint(**{**base, **kw})


# every shape the judges build, with the display text the shipped tables had (or have now)
SHAPES = [
    (excess(), "center_detached vs center, digits, lr 1"),
    (
        Endpoint(
            measure="growth exponent alpha",
            effect=0.5,
            lo=0.4,
            hi=0.6,
            n=5,
            variant="center_detached",
            dataset="synthetic",
            lr=0.1,
            layer=0,
        ),
        "center_detached, synthetic, lr 0.1, layer l0",
    ),
    (
        Endpoint(
            measure="twin's drift ||b_T - b_0||",
            effect=0.0,
            n=5,
            variant="center_detached",
            twin="center",
            dataset="synthetic",
            lr=0.01,
            layer=2,
        ),
        "center_detached vs center, synthetic, lr 0.01, layer l2",
    ),
    (
        Endpoint(
            measure="final full-set loss, train mode, matched lr",
            effect=0.04,
            lo=0.02,
            hi=0.06,
            n=5,
            variant="standardize_detached",
            twin="standardize",
            minus_variant="center_detached",
            minus_twin="center",
            dataset="synthetic",
        ),
        "synthetic: (standardize_detached - standardize) - (center_detached - center)",
    ),
    (
        Endpoint(
            measure="blow-up rate",
            effect=0.6,
            lo=0.2,
            hi=1.0,
            n=5,
            variant="population_detached",
            refresh_every=10,
            dataset="digits",
            lr=0.1,
        ),
        "population_detached, K = 10, digits, lr 0.1",
    ),
    (
        Endpoint(
            measure="worst |dl/db| / |dl/dW|",
            effect=3e-7,
            n=75,
            variant="bn",
            over="max over members, layers and logged steps",
        ),
        "bn, max over members, layers and logged steps",
    ),
    (
        Endpoint(
            measure="median |dl/db| / |dl/dW| on the controls",
            effect=0.36,
            n=106,
            variants=("none", "frozen"),
            note="b is not redundant",
        ),
        "none and frozen: b is not redundant",
    ),
    (
        Endpoint(
            measure="median of the same on the control",
            effect=0.003,
            n=59,
            variant="none",
            note="b is not redundant there",
        ),
        "none: b is not redundant there",
    ),
    (
        Endpoint(
            measure="worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
            effect=2e-7,
            n=197,
            group="detached batch centering",
            variants=("center_detached", "standardize_detached"),
            over="max over members and evaluations",
        ),
        "detached batch centering (center_detached, standardize_detached), max over members and evaluations",
    ),
]


@pytest.mark.parametrize("e, text", SHAPES, ids=[t for _, t in SHAPES])
def test_the_display_text_is_derived_from_the_fields(e, text):
    assert e.detail == text
    assert e.text().startswith(f"{e.measure} ({text}): ")


def test_changing_a_field_changes_the_text_and_the_key():
    e = excess()
    for change, now in (
        (dict(lr=0.3), "lr 0.3"),
        (dict(dataset="synthetic"), "synthetic"),
        (dict(twin="frozen"), "vs frozen"),
        (dict(layer=1), "layer l1"),
    ):
        other = dataclasses.replace(e, **change)
        assert other.detail != e.detail and now in other.detail and now not in e.detail
        assert other.key != e.key
    # the numbers, the unit, the note and the marks are not what the endpoint is
    same = dataclasses.replace(
        e, effect=0.9, lo=0.5, hi=1.0, n=7, unit="share", note="seen", decides=True, primary=True
    )
    assert same.key == e.key


def test_fields_are_typed_so_keys_match_across_sources():
    import numpy as np

    e = excess(lr=np.float64(1.0), n=np.int64(5), layer=np.int64(0), dataset=None)
    assert type(e.lr) is float and type(e.n) is int and type(e.layer) is int
    assert e.key == excess(lr=1, layer=0, dataset=None).key and hash(e.key) == hash(excess(layer=0, dataset=None).key)
    with pytest.raises(TypeError):
        Endpoint("excess", 0.2, 0.0, 0.6, 5)  # built by keyword: a field cannot be taken for another
    with pytest.raises(ValueError):
        excess(minus_variant="center_detached")  # half a second pair


def test_same_display_text_different_fields_do_not_match():
    a, b = excess(lr=0.1), excess(lr=0.1000001)  # both read "lr 0.1"
    assert a.detail == b.detail and a.key != b.key


def test_the_table_round_trips_through_its_owner(tmp_path):
    eps = [dataclasses.replace(e, decides=i % 2 == 0, primary=i == 0) for i, (e, _) in enumerate(SHAPES)]
    frame = endpoint_frame(eps)
    assert list(frame.columns) == list(TABLE_COLUMNS)
    assert str(frame["layer"].dtype) == "Int64" and frame["lr"].dtype == float and frame["decides"].dtype == bool
    frame.to_csv(tmp_path / "claim9.csv", index=False)
    back = read_endpoint_table(tmp_path / "claim9.csv")
    assert list(back.columns) == list(TABLE_COLUMNS) and back["detail"].tolist() == [t for _, t in SHAPES]
    got = endpoints_of(back)
    assert [e.key for e in got] == [e.key for e in eps]
    for g, e in zip(got, eps):
        assert (g.n, g.unit, g.note, g.decides, g.primary) == (e.n, e.unit, e.note, e.decides, e.primary)
        for f in ("effect", "lo", "hi"):
            assert getattr(g, f) == pytest.approx(getattr(e, f), nan_ok=True)
    # no endpoint: a header, read back as an empty endpoints table; another table is not one
    endpoint_frame([]).to_csv(tmp_path / "empty.csv", index=False)
    assert read_endpoint_table(tmp_path / "empty.csv").empty
    pd.DataFrame({"role": ["subject"], "worst": [1e-7]}).to_csv(tmp_path / "claim1.csv", index=False)
    assert read_endpoint_table(tmp_path / "claim1.csv") is None
    assert read_endpoint_table(tmp_path / "missing.csv") is None


# -- Claim -------------------------------------------------------------------------------------------
def _judge(*eps):
    return lambda m, h, s: Judgement(list(eps) or [excess(measure="m1"), excess(measure="m2", lr=3.0)], "ev", PASSED)


def _claim(**kw) -> dict:
    """A plug-in identity claim: decided by its judge's check, naming the endpoint that check reads."""
    base = dict(
        key="claimX",
        title="t",
        statement="s",
        kind="identity",
        endpoints=(("m1", "how 1"), ("m2", "how 2")),
        primary="m1",
        controls="c",
        rule="r {ci_level}",
        answers={PASSED: "checked"},
        judge=_judge(),
    )
    return {**base, **kw}


def test_a_claim_is_built_by_keyword_and_names_a_declared_primary_endpoint():
    kw = _claim()
    with pytest.raises(TypeError):
        Claim(*kw.values())
    with pytest.raises(ValueError, match="not declared"):
        Claim(**_claim(primary="m3"))
    v = Claim(**kw).evaluate(pd.DataFrame(), None, ReportSettings())
    assert (v.status, v.answer, v.rule, v.tests) == (PASSED, "checked", "r 0.95", [])
    assert [e.primary for e in v.endpoints] == [True, False]
    assert v.table["primary"].tolist() == [True, False] and v.table["measure"].tolist() == ["m1", "m2"]
    bad = Claim(**_claim(judge=_judge(excess(measure="m9"))))
    with pytest.raises(ValueError, match="undeclared"):
        bad.evaluate(pd.DataFrame(), None, ReportSettings())


def test_a_measurement_claim_is_decided_by_the_primary_tests_its_spec_rows_declare():
    # a measurement claim names exactly the tests pipeline.spec.primaries declares for its key: a plug-in
    # key has none there, so it cannot be a measurement claim (nor borrow another claim's test)
    with pytest.raises(ValueError, match=r"pipeline.spec.primaries declares \[\]; the claim names \[\]"):
        Claim(**_claim(kind="measurement", primary=None))
    with pytest.raises(ValueError, match=r"declares \[\]; the claim names \['claim4'\]"):
        Claim(**_claim(kind="measurement", primary=None, tests=("claim4",)))
    with pytest.raises(ValueError, match=r"declares \['claim3_fit', 'claim3_stability'\]"):
        Claim(**_claim(key="claim3", kind="measurement", primary=None, tests=("claim3_fit",)))
    # its judge must build the comparisons of each of its tests
    mute = Claim(
        **_claim(
            key="claim2",
            kind="measurement",
            primary=None,
            tests=("claim2",),
            endpoints=(("m1", "how 1"), ("m2", "how 2")),
        )
    )
    with pytest.raises(ValueError, match=r"built no comparisons for primary test\(s\) \['claim2'\]"):
        mute.evaluate(pd.DataFrame(), None, ReportSettings())


def test_every_registry_claim_names_its_primary_endpoint_or_tests():
    assert {c.key: c.primary for c in REGISTRY if c.kind == "identity"} == {
        "claim1": "worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
        "claim5": "worst |dl/db| / |dl/dW| in float64",
    }
    assert {c.key: (c.primary, c.tests) for c in REGISTRY if c.kind == "measurement"} == {
        "claim1b": (None, ("claim1b",)),
        "claim2": (None, ("claim2",)),
        "claim3": (None, ("claim3_fit", "claim3_stability")),
        "claim4": (None, ("claim4",)),
        "claim_shadow": (None, ("claim_shadow",)),
    }


# -- compare: endpoints matched across setups by key -----------------------------------------------------
def _setup(root, name, eps, kind="measurement"):
    tab = root / name / "tables"
    tab.mkdir(parents=True)
    pd.DataFrame([{"key": "claimX", "title": "t", "kind": kind, "status": "holds", "rule": "r", "figure": ""}]).to_csv(
        tab / "verdicts.csv", index=False
    )
    endpoint_frame(eps).to_csv(tab / "claimX.csv", index=False)


def _tests_csv(root, name, rows):
    """A setup's tables/primary_tests.csv as pipeline.report.tables.test_rows writes it."""
    cols = [
        "claim",
        "test",
        "endpoint",
        "unit",
        "smallest_effect",
        "dataset",
        "role",
        "effect",
        "ci_lo",
        "ci_hi",
        "p",
        "p_holm",
        "n",
        "clusters",
        "status",
    ]
    pd.DataFrame([dict(zip(cols, r)) for r in rows], columns=cols).to_csv(
        root / name / "tables" / "primary_tests.csv", index=False
    )


def test_compare_matches_each_setups_primary_tests_by_key_and_endpoint(tmp_path):
    for name in ("a", "b"):
        _setup(tmp_path, name, [excess(decides=True, primary=True)])
    pooled = ("(pooled)", "test")
    _tests_csv(
        tmp_path,
        "a",
        [
            (
                "claim4",
                "claim4",
                "excess_divergence",
                "fraction",
                0.1,
                *pooled,
                0.3,
                0.1,
                0.5,
                0.001,
                0.004,
                90,
                10,
                "holds",
            ),
            (
                "claim4",
                "claim4",
                "excess_divergence",
                "fraction",
                0.1,
                "digits",
                "pooled",
                0.5,
                0.3,
                0.7,
                0.06,
                float("nan"),
                45,
                5,
                "",
            ),
        ],
    )
    _tests_csv(
        tmp_path,
        "b",
        [
            (
                "claim4",
                "claim4",
                "excess_divergence",
                "fraction",
                0.1,
                *pooled,
                0.05,
                -0.1,
                0.2,
                0.4,
                1.0,
                90,
                10,
                "not shown",
            ),
            (
                "claim4",
                "claim4",
                "excess_blown",
                "fraction",
                0.1,
                *pooled,
                0.6,
                0.4,
                0.8,
                0.002,
                0.004,
                90,
                10,
                "holds",
            ),
        ],
    )
    setups = {s: {"model": {"depth": d, "width": 32}, "optim": {"name": "sgd"}} for s, d in (("a", 3), ("b", 6))}
    status, tests, missing = collect(tmp_path, setups)
    assert not missing and set(status["setup"]) == {"a", "b"}
    assert len(tests) == 3 and set(tests["role"]) == {"test"}  # per data set rows are not compared
    m = matched(tests, ["mlp 3x32, sgd", "mlp 6x32, sgd"]).set_index("endpoint")
    # the same test and endpoint match across setups; another endpoint is another row, never mixed in
    assert len(m) == 2
    div = m.loc["excess_divergence"]
    assert (div["p_holm mlp 3x32, sgd"], div["status mlp 3x32, sgd"]) == (0.004, "holds")
    assert (div["p_holm mlp 6x32, sgd"], div["status mlp 6x32, sgd"]) == (1.0, "not shown")
    assert (
        math.isnan(m.loc["excess_blown", "effect mlp 3x32, sgd"])
        and m.loc["excess_blown", "effect mlp 6x32, sgd"] == 0.6
    )


def test_the_blowup_figure_reads_the_fields_not_the_text():
    from pipeline.report.claim_figures import blowup_cells

    eps = [
        excess(dataset="synthetic_zero_mean", lr=0.3, lo=0.2),
        Endpoint(
            measure="blow-up rate",
            effect=0.6,
            lo=0.2,
            hi=1.0,
            n=5,
            variant="population_detached_k100",
            refresh_every=100,
            dataset="digits",
            lr=1.0,
        ),
        excess(variant="running_center_detached", dataset="digits", lr=1.0, lo=-0.1),
    ]
    t = blowup_cells(eps)
    assert t[["kind", "row", "col"]].values.tolist() == [
        ["excess", "center_detached vs center", "zero mean lr 0.3"],
        ["sweep", "K = 100", "digits lr 1"],
        ["excess", "running_center_detached vs center", "digits lr 1"],
    ]
    assert t["sure"].tolist() == [True, True, False]


def test_the_spec_module_needs_neither_pandas_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys, pipeline.spec.endpoints; "
        "print(sorted(m for m in ('pandas', 'torch', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compare_without_a_setups_primary_tests_compares_no_numbers_for_it(tmp_path):
    """An older setup report (no tables/primary_tests.csv): its statuses are listed, no number is made up."""
    _setup(tmp_path, "a", [excess(decides=True, primary=True)])
    status, tests, missing = collect(tmp_path, {"a": {"model": {"depth": 3, "width": 32}, "optim": {"name": "sgd"}}})
    assert list(status["status"]) == ["holds"] and tests.empty and not missing
