"""How a variant looks in every figure: hue = its family, line style = detached or not.

A reader tells 19+ variants apart at a glance only if the encoding carries meaning: the hue says
what the normalization computes (its family, read from the variant's NormSpec row -- never from its
name), the line style says whether the statistics leave the gradient step (dashed) or the gradient
flows through them (solid). Within a family the variants get distinct shades of that family's hue
band, assigned in params order, so a variant's colour is the same in every grid and figure.

    from pipeline.report.style import family, palette, line_style, legend_handles
    family(norm_spec("center_detached"))            # "centering"
    line_style(params, "center_detached")           # "--"
"""

from __future__ import annotations

import colorsys
from typing import Literal

from pipeline.spec.variants import NormSpec, norm_spec

Family = Literal["centering", "standardizing (detached)", "normalizing (gradient through)", "per-example", "control"]

# family -> (first hue, last hue) in degrees of the HLS wheel; bands do not overlap, and control is grey
HUE_BANDS: dict[str, tuple[float, float]] = {
    "centering": (190.0, 250.0),  # blues
    "standardizing (detached)": (0.0, 40.0),  # reds to oranges
    "normalizing (gradient through)": (95.0, 150.0),  # greens
    "per-example": (275.0, 320.0),  # purples
}
FAMILIES: tuple[str, ...] = (*HUE_BANDS, "control")  # the legend's order
DETACHED_STYLE, THROUGH_STYLE = "--", "-"


def family(spec: NormSpec) -> Family:
    """The family of a normalization layer, from its row's properties (rules in this order):
    no data statistics or fixed ones (none, weightnorm, frozen: an affine map) -> control; subtracts a
    mean without dividing -> centering; statistics outside the gradient step -> standardizing
    (detached); per-example statistics -> per-example; else BN-like normalizing with the gradient
    through its statistics."""
    if spec.statistics in ("none", "fixed"):
        return "control"
    if spec.centers and not spec.scales:
        return "centering"
    if spec.detached:
        return "standardizing (detached)"
    if spec.statistics == "per_example":
        return "per-example"
    return "normalizing (gradient through)"


def variant_spec(params, variant: str) -> NormSpec:
    return norm_spec(params.variants[variant].norm)


def family_of(params, variant: str) -> Family:
    return family(variant_spec(params, variant))


def line_style(params, variant: str) -> str:
    """Dashed where the statistics are re-estimated outside the gradient step (NormSpec.detached),
    solid where the gradient sees them (or there are none)."""
    return DETACHED_STYLE if variant_spec(params, variant).detached else THROUGH_STYLE


def _shades(fam: str, n: int) -> list[tuple[float, float, float]]:
    """n distinct colours of a family: hues spread over its band, lightness alternating so that
    neighbours differ in two ways; control: greys from dark to mid."""
    if fam == "control":
        return [(g, g, g) for g in ([0.15] if n == 1 else [0.1 + 0.45 * i / (n - 1) for i in range(n)])]
    lo, hi = HUE_BANDS[fam]
    out = []
    for i in range(n):
        hue = (lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.5)) / 360.0
        light = (0.32, 0.5, 0.42)[i % 3]
        out.append(colorsys.hls_to_rgb(hue, light, 0.8))
    return out


def palette(params) -> dict[str, tuple[float, float, float]]:
    """variant -> RGB for every variant params declares (not only the grid's: fixed across grids)."""
    by_family: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for name in params.variants:
        by_family[family_of(params, name)].append(name)
    return {name: colour for fam, names in by_family.items() for name, colour in zip(names, _shades(fam, len(names)))}


def legend_handles(plt, params, variants, pal=None, lw: float = 1.8) -> list:
    """Legend entries grouped by family (a bold-less header line per family, then its variants with
    their colour and line style), plus a final key for the line styles."""
    pal = pal or palette(params)
    handles = []
    for fam in FAMILIES:
        members = [v for v in variants if family_of(params, v) == fam]
        if not members:
            continue
        handles.append(plt.Line2D([], [], ls="none", label=fam.upper()))
        handles += [plt.Line2D([], [], color=pal[v], ls=line_style(params, v), lw=lw, label=f"  {v}") for v in members]
    handles += [
        plt.Line2D([], [], ls="none", label="LINE STYLE"),
        plt.Line2D([], [], color="0.3", ls=THROUGH_STYLE, lw=lw, label="  gradient through statistics"),
        plt.Line2D([], [], color="0.3", ls=DETACHED_STYLE, lw=lw, label="  detached statistics"),
    ]
    return handles
