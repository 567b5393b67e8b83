"""Issue 20 item 8: figures that read at a glance. A variant's hue says its family (read from its
NormSpec row, never its name), its line style whether its statistics are detached (dashed) or
gradient-through (solid); every figure takes both from pipeline.report.plotting.

Before: one tab10/Dark2/Set1 colour per variant in params order (`standardize` and `bias_only_toy`
both red, solid lines everywhere; mechanism figures drew detached solid, others dashed).

    .venv/bin/python -m pytest -q tests/test_figure_style.py
"""

from __future__ import annotations

import colorsys
import itertools
import re
from pathlib import Path

import pytest

from pipeline.config import load_params
from pipeline.report import plotting, style
from pipeline.spec.variants import NormSpec, norm_names, norm_spec, register_spec, unregister_spec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


def _hue(rgb) -> float:
    return colorsys.rgb_to_hls(*rgb)[0] * 360


def test_variants_of_different_families_never_share_a_colour(params):
    pal = plotting.palette(params)
    assert set(pal) == set(params.variants)
    for a, b in itertools.combinations(params.variants, 2):
        if style.family_of(params, a) != style.family_of(params, b):
            assert pal[a] != pal[b], (a, b)
    # the pair: standardize and bias_only_toy were both red
    assert style.family_of(params, "standardize") != style.family_of(params, "bias_only_toy")


def test_no_two_variants_share_a_colour_and_a_family_keeps_its_hue_band(params):
    pal = plotting.palette(params)
    assert len(set(pal.values())) == len(pal)  # within a family too: shades differ
    for v, rgb in pal.items():
        fam = style.family_of(params, v)
        if fam == "control":
            assert rgb[0] == rgb[1] == rgb[2], v  # grey
        else:
            lo, hi = style.HUE_BANDS[fam]
            assert lo - 0.5 <= _hue(rgb) <= hi + 0.5, (v, fam, _hue(rgb))
    bands = sorted(style.HUE_BANDS.values())
    assert all(a[1] < b[0] for a, b in zip(bands, bands[1:]))  # bands disjoint: families never meet


def test_detached_and_through_differ_in_line_style(params):
    for v in params.variants:
        detached = norm_spec(params.variants[v].norm).detached
        assert plotting.line_style(params, v) == ("--" if detached else "-"), v
    assert plotting.line_style(params, "center_detached") != plotting.line_style(params, "center")


def test_colour_is_fixed_across_grids(params):
    # a variant's colour depends on the declared variants, not on which the grid trains
    small = params.model_copy(update={"grid": params.grid.model_copy(update={"variants": ["bn", "center"]})})
    assert plotting.palette(small) == plotting.palette(params)


def test_family_is_read_from_the_spec_not_the_name():
    assert style.family(norm_spec("center_detached")) == "centering"
    assert style.family(norm_spec("standardize_detached")) == "standardizing (detached)"
    assert style.family(norm_spec("bn")) == "normalizing (gradient through)"
    assert style.family(norm_spec("layernorm")) == "per-example"
    assert {style.family(norm_spec(n)) for n in ("none", "weightnorm", "frozen")} == {"control"}
    # a plug-in whose name says "center" but which scales with detached statistics: its row decides
    spec = register_spec(NormSpec("center_like_name", "batch", detached=True, centers=True, scales=True))
    try:
        assert style.family(spec) == "standardizing (detached)"
        named_bn = register_spec(NormSpec("bn_lookalike", "batch", detached=True, centers=True))
        assert style.family(named_bn) == "centering"
    finally:
        unregister_spec("center_like_name")
        unregister_spec("bn_lookalike")
    assert all(style.family(norm_spec(n)) in style.FAMILIES for n in norm_names())


def test_every_figure_module_takes_line_style_from_the_helper():
    # a literal solid/dashed choice per variant (`ls="-" if v in pairs else "--"`) is what made the
    # mechanism figures draw detached solid while the others drew it dashed
    for path in (REPO / "pipeline" / "report").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"""ls=["'][-]+["'] if """, text), path.name
        assert "bbox_to_anchor=(1.0, 0.5)" not in text, path.name  # legends go "outside" (constrained layout)


def test_legend_groups_variants_by_family_with_a_line_style_key(params):
    plt = plotting.plt_()
    labels = [h.get_label() for h in style.legend_handles(plt, params, ["bn", "center_detached", "center", "none"])]
    assert (
        labels.index("CENTERING") < labels.index("  center_detached") < labels.index("NORMALIZING (GRADIENT THROUGH)")
    )
    assert labels[-3:] == ["LINE STYLE", "  gradient through statistics", "  detached statistics"]
