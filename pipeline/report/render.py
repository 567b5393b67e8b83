"""The report as Markdown (renders on GitHub) and as one self-contained HTML page.

    from pipeline.report.render import markdown, to_html
    text = markdown(ctx); html = to_html(text, out_folder)

Every claim of the registry is rendered the same way: statement, kind (an identity is shown
as a check of the implementation, never as evidence), status, its primary tests (measurements),
the rule and whether it was declared before the data (the ledger of rules changed after it,
pipeline/claims/ledger.py), controls, descriptive endpoints, evidence, answer, figure and table.
"""

from __future__ import annotations

import base64
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import REPO_ROOT, Params
from pipeline.report import bounded, mechanism
from pipeline.report.markdown import cell_text, md_table, num_text  # noqa: F401 (cell_text: re-exported)
from pipeline.report.summary_figure import BN_VARIANT
from pipeline.report.summary_figure import FIGURE as SUMMARY
from pipeline.report.toc import slug, with_toc

MODES = (
    "Every loss says its mode: **training mode** = the normalization uses the mini-batch's statistics "
    "(as in a training step); **inference mode** = it uses its running / population statistics "
    "(torch `eval()`), as at prediction time."
)
KIND_TEXT = {
    "identity": "identity: a check of the implementation (true by construction), not evidence",
    "measurement": "measurement",
}
STATUS_TEXT = {
    "trained": "trained (loss well below its baseline, accuracy at least the row's `acc_bar`: the data "
    "set's best median accuracy minus the declared gap, and never below chance plus a margin)",
    "failed": "failed to train (loss or accuracy short of that)",
    "diverged": "diverged (non-finite or huge loss)",
    "fixed_loss": "fixed_loss (the loss cannot move by construction)",
}
# growth of the parameters is flagged beside the outcome, never instead of it: a net that fits with a
# grown ||W|| is trained, and its flag says the weights grew
FLAG_TEXT = {
    "w_grew": "some layer's ||W_T|| / ||W_0|| past the declared factor (a flag: a member that fits is still trained)",
    "b_grew": "b's rms drift per unit past the declared bound",
}


@dataclass
class ReportContext:
    params: Params
    out: Path
    cells: list[dict]  # the included cells' summaries
    excluded: list[tuple[str, str]]
    verdicts: list
    answer: str
    tables: dict[str, pd.DataFrame]
    figures: list  # figures.Drawn
    unknown_figures: list[str]
    outputs_hashes: dict[str, str] = field(default_factory=dict)  # cell -> records.outputs_hash of its folder
    notes: list[str] = field(default_factory=list)
    mlflow_experiment_id: str | None = None  # the experiment's id in the store read (None: --no-track)


def _anchor(v) -> str:
    from pipeline.claims.answer import anchor

    return anchor(v)


def _science_link(out: Path) -> str:
    """docs/science.md by a path relative to the report, only when the report is inside the repo."""
    doc, out = REPO_ROOT / "docs" / "science.md", Path(out).resolve()
    if REPO_ROOT in out.parents or out == REPO_ROOT:
        return f"[docs/science.md]({Path(os.path.relpath(doc, out)).as_posix()})"
    return "`docs/science.md` (in the repository)"


MAX_ENDPOINT_ROWS = 12  # endpoints listed per verdict in the markdown
RATIO_UNITS = ("x", "hazard ratio")


def listed_endpoints(v) -> list:
    """The endpoints the verdict's own list may show: all, but the ratios of a claim with its own section
    (SECTIONS) below, which shows them against their null of 1."""
    if v.key in SECTIONS:
        return [e for e in v.endpoints if e.unit not in RATIO_UNITS]
    return list(v.endpoints)


def _endpoints(v) -> str:
    if not v.endpoints:
        return "_No endpoint could be computed (too few surviving members)._"

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    shown, note = listed_endpoints(v), ""
    if len(shown) < len(v.endpoints):  # ratios (growth factors, hazard ratios: their null is 1, not 0)
        note = (
            f"\n\n_{len(v.endpoints) - len(shown)} ratio endpoints (growth factors, hazard ratios) are shown "
            f"in the section below; every row is in [tables/{v.key}.csv](tables/{v.key}.csv)._"
        )
    if len(shown) > MAX_ENDPOINT_ROWS:  # the markdown stays readable; the CSV has every row
        missing0 = [e for e in shown if finite(e.lo) and (e.lo > 0 or e.hi < 0)]
        total = len(shown)
        shown = sorted(missing0, key=lambda e: -abs(e.effect) if finite(e.effect) else 0)[:MAX_ENDPOINT_ROWS]
        note = (
            f"\n\n_{len(shown)} of {total} endpoints shown: those whose interval excludes 0, "
            f"largest effect first (of {len(missing0)} such); every row is in "
            f"[tables/{v.key}.csv](tables/{v.key}.csv)._"
        ) + note.replace("; every row is in", "; all in", 1)
        if not shown:
            return (
                f"_None of the {total} endpoints has an interval excluding 0; every row is in "
                f"[tables/{v.key}.csv](tables/{v.key}.csv)._" + note
            )
    rows = [
        {
            "endpoint": e.measure,
            "effect": f"{num_text(e.effect)} {e.unit}".strip() if finite(e.effect) else "–",
            "95% CI (over seeds)": f"[{num_text(e.lo)}, {num_text(e.hi)}]" if finite(e.lo) or finite(e.hi) else "–",
            "n": e.n,
            "detail": e.detail,
        }
        for e in shown
    ]
    return md_table(pd.DataFrame(rows)) + note


def _figure_links(ctx: ReportContext, name: str | None) -> list[str]:
    if not name:
        return []
    hits = [f for f in ctx.figures if f.figure == name]
    if name in ctx.unknown_figures:
        return [
            f"_Figure `{name}` is declared by this claim but not drawn by the report "
            f"(pipeline/report/figures.py has no drawer of that name)._"
        ]
    if not hits:
        return [f"_Figure `{name}`: nothing to draw for the cells in this grid._"]
    return [f"![{f.key}]({f.path})" for f in hits]


def _tests(ctx: ReportContext, v) -> str:
    """The primary tests of a measurement claim: the pooled result, then each data set's."""
    from pipeline.stats.inference import Rule, rule_text

    if not v.tests:
        return ""
    rows = []
    for r in v.tests:
        rows.append(
            {
                "test": r.key,
                "endpoint (declared in report.primary)": f"{r.endpoint}: {r.text}; + = {r.plus}",
                "effect [95% CI]": r.interval_text(),
                "p": f"{r.p:.3g}",
                "Holm p": f"{r.p_holm:.3g}",
                "comparisons / clusters": f"{r.n} / {r.clusters} (smallest p possible {r.min_p:.2g})",
                "smallest effect": f"+/-{r.smallest_effect:g} {r.unit}",
                "status": f"**{r.status}**",
            }
        )
        parts = [(d, f"{d.dataset} ({d.role})") for d in r.by_dataset]
        parts += [(d, f"variant {d.dataset} (pooled data sets)") for d in r.by_variant] if len(r.by_variant) > 1 else []
        for d, label in parts:
            ci = f" [{num_text(d.lo)}, {num_text(d.hi)}]" if math.isfinite(d.lo) else ""
            rows.append(
                {
                    "test": "",
                    "endpoint (declared in report.primary)": label,
                    "effect [95% CI]": f"{num_text(d.effect)}{ci}",
                    "p": f"{d.p:.3g}",
                    "Holm p": "",
                    "comparisons / clusters": f"{d.n} / {d.seeds}",
                    "smallest effect": "",
                    "status": "",
                }
            )
    s = ctx.params.report
    rule = rule_text(
        Rule(
            smallest_effect=v.tests[0].smallest_effect,
            unit=v.tests[0].unit,
            alpha=s.family_alpha,
            level=s.ci_level,
            resamples=s.bootstrap,
        )
    )
    return (
        md_table(pd.DataFrame(rows)) + "\n\n_Primary test: " + rule + " Per data set (and per variant): the "
        "same comparison on that part alone (its p unadjusted, descriptive; Student t interval over its seeds)._"
    )


def _declared(v) -> str:
    from pipeline.claims.ledger import changes_for

    changes = list({e.commit: e for e in changes_for(v.key)}.values())  # one mention per commit
    if not changes:
        return "declared before the data"
    return (
        "revised after the data -- "
        + "; ".join(
            f"`{e.commit}` ({e.date}): status under the replaced rule **{v.legacy.get(e.legacy_key, 'not computed')}**"
            for e in changes
        )
        + " ([the ledger](#rules-changed-after-the-data))"
    )


def _design_note(ctx: ReportContext) -> list[str]:
    """Where a primary test pools too few (data set, seed) clusters for an exact test to reach Holm's
    first threshold, no data could decide it: say so beside the answer, not only in a table."""
    tests = [r for v in ctx.verdicts for r in v.tests]
    first = ctx.params.report.family_alpha / max(len(tests), 1)
    short = [r for r in tests if r.clusters and r.min_p > first]
    if not short:
        return []
    return [
        f"_Design: {', '.join(f'{r.key} pools {r.clusters} (data set, seed) clusters' for r in short)}; the "
        f"smallest p an exact sign-flip test can give there ({', '.join(f'{r.min_p:.2g}' for r in short)}) is "
        f"above Holm's first threshold ({ctx.params.report.family_alpha:g} / {len(tests)} tests = {first:.2g}): "
        f"such a test decides only after Holm's steps have rejected others, and never where its smallest p exceeds "
        f"{ctx.params.report.family_alpha:g} -- more seeds or data sets are needed._",
        "",
    ]


def _summary_figure(ctx: ReportContext) -> list[str]:
    """The one figure right after the answer, with its caption; or why there is none."""
    hits = [f for f in ctx.figures if f.figure == SUMMARY]
    if hits:
        return [line for f in hits for line in (f"![{f.key}]({f.path})", "", f"_{f.caption}_", "")]
    if SUMMARY in ctx.unknown_figures:
        return [*_figure_links(ctx, SUMMARY), ""]
    deciders = ctx.params.report.blowup_deciders
    det = (
        f"`{deciders[0]}` (report.blowup_deciders[0], the variant that decides claim 4)"
        if deciders
        else "a detached centering variant (report.blowup_deciders is empty)"
    )
    return [
        f"_Summary figure `{SUMMARY}`: nothing to draw: the grid has no member of {det}, the variant it "
        f"compares with its gradient-through twin and `{BN_VARIANT}`._",
        "",
    ]


def _verdict_section(ctx: ReportContext, i: int, v) -> list[str]:
    md = [
        f"### {v.key}: {v.title}",
        "",
        f"> {v.statement}",
        "",
        f"- **Kind:** {KIND_TEXT.get(v.kind, v.kind)}",
        f"- **Status:** **{v.status}**",
        f"- **Rule:** {v.rule}",
        f"- **Declared:** {_declared(v)}",
        f"- **Controls:** {v.controls or '–'}",
        "",
        _tests(ctx, v),
        "",
        _endpoints(v),
        "",
        f"**Evidence.** {v.evidence}",
        "",
        f"**Answer.** {v.answer}",
        "",
    ]
    if v.table is not None:
        md += [f"Table: [tables/{v.key}.csv](tables/{v.key}.csv).", ""]
    md += [*_figure_links(ctx, v.figure), ""]
    return md + SECTIONS.get(v.key, lambda ctx: [])(ctx)


def _largest_lr(ctx: ReportContext) -> str:
    t = ctx.tables["largest_trained_lr"]
    if t.empty or "largest_trained_lr" not in t:
        return "_none_"
    # each lr beside the median accuracy its seeds reached there: "0.3 (acc 0.97)"
    acc = t["acc_at_largest"] if "acc_at_largest" in t else pd.Series(float("nan"), index=t.index)
    text = [
        f"{lr:g}" + (f" (acc {a:.2g})" if math.isfinite(a) else "") if math.isfinite(lr) else "none"
        for lr, a in zip(t["largest_trained_lr"].astype(float), acc.astype(float))
    ]
    piv = t.assign(text=text).pivot(index="variant", columns="dataset", values="text")
    piv = piv.reindex(
        index=[v for v in ctx.params.grid.variants if v in piv.index],
        columns=[d for d in ctx.params.grid.datasets if d in piv.columns],
    )
    return md_table(piv.fillna("none").reset_index())


# claim key -> more Markdown under its verdict (claim 4: its mechanism and time to divergence; claims 2 and 1b:
# their predictions beside the measurements, pipeline/report/bounded.py)
SECTIONS = {"claim4": mechanism.section, "claim2": bounded.claim2_section, "claim1b": bounded.claim1b_section}


def markdown(ctx: ReportContext) -> str:
    p = ctx.params
    n_members = len(p.optim.lrs) * len(p.optim.seeds)
    md = [
        "# normlab report: what happens when normalization statistics leave the gradient step",
        "",
        f"{len(ctx.cells)} cells of {len(p.grid.variants) * len(p.grid.datasets)} "
        f"({len(p.grid.variants)} variants x {len(p.grid.datasets)} data sets; {len(ctx.excluded)} excluded), "
        f"{n_members} members each (lrs {', '.join(f'{x:g}' for x in p.optim.lrs)} x {len(p.optim.seeds)} seeds), "
        f"{p.train.steps} {p.optim.name.upper()} steps, batch {p.optim.batch_size}, "
        + (
            f"CNN {p.model.depth} blocks x {p.model.channels} channels"
            if p.model.kind == "cnn"
            else f"MLP {p.model.depth}x{p.model.width}"
        )
        + f" {p.model.activation}.",
        "",
        MODES,
        "",
        f"The variants, what each claim predicts, the endpoints and rules: {_science_link(ctx.out)}.",
        "",
        "## The answer",
        "",
        ctx.answer,
        "",
        *_design_note(ctx),
        *_summary_figure(ctx),
        "## Verdicts",
        "",
        "| claim | title | kind | primary effect [95% CI] | Holm p | status |",
        "|---|---|---|---|---|---|",
    ]
    for v in ctx.verdicts:
        kind = "identity check (not evidence)" if v.kind == "identity" else v.kind
        eff = "; ".join(f"{r.side + ': ' if r.side else ''}{r.interval_text()}" for r in v.tests) or "–"
        hp = "; ".join(f"{r.p_holm:.2g}" for r in v.tests) or "–"
        # a claim with sides (claim 3: fit, stability) shows each side's own status beside the combined one
        sides = "; ".join(f"{r.side} {r.status}" for r in v.tests if r.side)
        status = f"**{v.status}**" + (f" ({sides})" if sides else "")
        md.append(f"| [{v.key}]({_anchor(v)}) | {cell_text(v.title)} | {kind} | {cell_text(eff)} | {hp} | {status} |")
    md.append("")
    for i, v in enumerate(ctx.verdicts, 1):
        md += _verdict_section(ctx, i, v)
    from pipeline.claims.ledger import ledger_markdown

    md += [
        "## Rules changed after the data",
        "",
        "Each rule below was changed after data had been seen. The last column re-reads THIS report's data "
        "under the rule each change replaced (all later rules kept), beside today's verdict -- not a history "
        "of past reports; numbers quoted in 'why' are from the grid named there. A verdict whose claim no row "
        "names was decided by the rule declared before the data.",
        "",
        ledger_markdown(ctx.verdicts),
        "",
    ]
    md += [
        "## Member outcomes",
        "",
        "Each member (lr x seed) is judged against a baseline fixed before it trains (its full-train-set "
        "loss in training mode at initialization, and chance: ln C, accuracy 1/C), never its own early "
        "mini-batches. Outcomes: " + "; ".join(f"`{k}` = {t}" for k, t in STATUS_TEXT.items()) + ". "
        "Flags beside the outcome (columns of the member table): "
        + "; ".join(f"`{k}` = {t}" for k, t in FLAG_TEXT.items())
        + ". "
        "Counts per variant x data set x lr: [tables/status.csv](tables/status.csv); every member: "
        "[tables/members.csv](tables/members.csv).",
        "",
        "Largest trained learning rate per variant and data set (`pipeline.outcomes.largest_trained_lr`; "
        "`none` = no lr of the grid trained; (acc x) = the median over seeds of the final full-set "
        "training-mode accuracy at that lr; [tables/largest_trained_lr.csv](tables/largest_trained_lr.csv)):",
        "",
        _largest_lr(ctx),
        "",
    ]
    md += ["## Figures", ""]
    for f in ctx.figures:
        if f.figure == SUMMARY:
            continue  # shown once, under the answer
        md += [f"### {f.key.replace('_', ' ')}", "", f.caption, "", f"![{f.key}]({f.path})", ""]
    md += ["## Cells excluded", ""]
    if ctx.excluded:
        md += ["These cells of the current grid are NOT in any number above:", ""]
        md += [f"- `{name}`: {why}" for name, why in ctx.excluded]
    else:
        md.append("None: every cell of the grid was made by the current params.")
    md.append("")
    if ctx.outputs_hashes:
        # run ids belong to one store, not to the outputs: the report names each cell's outputs by
        # their hash, and the parent run that wrote them carries the same hash as a tag
        from pipeline.report.mlflow_links import section  # links into the runs table, searched by hash

        md += section(ctx.outputs_hashes, ctx.params.tracking.experiment, ctx.mlflow_experiment_id)
    md += [
        *ctx.notes,
        "## Reproduce",
        "",
        "`make repro` (or `dvc repro`) regenerates this report from `params.yaml`; the report alone: "
        "`python -m pipeline.report --runs runs --out reports`. CSVs: [tables/](tables/).",
    ]

    return with_toc("\n".join(md) + "\n")  # a contents list before "## The answer"


def to_html(markdown_text: str, base: Path) -> str:
    """Markdown -> one HTML page, figures inlined as data URIs (opens with no server)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)

    def inline(m):
        data = base64.b64encode((Path(base) / m.group(1)).read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', inline, body)
    # the ids GitHub gives headings, so the answer's links to the verdicts work in the HTML page too
    body = re.sub(
        r"<h([23])>(.*?)</h\1>", lambda m: f'<h{m.group(1)} id="{slug(m.group(2))}">{m.group(2)}</h{m.group(1)}>', body
    )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:1px 3px}"
        "blockquote{color:#444;border-left:3px solid #ccc;margin-left:0;padding-left:1em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>normlab report</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
