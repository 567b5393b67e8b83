"""Does a claim depend on depth, architecture or optimizer? Compares one study's per-setup reports.

    python -m pipeline.compare --study studies/deep.yaml --reports reports/deep

Reads what each setup's report wrote (tables/verdicts.csv; tables/primary_tests.csv, each primary
test pooled and per data set) and writes, beside them, report.md, tables/by_setup.csv,
tables/primary_by_setup.csv (each primary test's effect, interval, Holm p and status per setup,
matched by the test's key and endpoint, never by display text), tables/largest_by_setup.csv (claim 4's
depth trend: the largest trained lr of the deciding detached variants, their twin and bn per setup) and
one figure per measured claim: its primary test(s) across setups. Nothing is re-judged here: each status is the one its setup's
report computed with its own rule (Holm within that report).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pipeline.spec import environment

RESERVED = {"figures", "tables", "report.md"}


def setup_label(params: dict) -> str:
    m, o = params["model"], params["optim"]
    arch = (
        f"cnn {m.get('depth')}x{m.get('channels', 16)}"
        if m.get("kind") == "cnn"
        else f"mlp {m.get('depth')}x{m.get('width')}"
    )
    opt = o.get("name", "sgd") + (f" m={o['momentum']:g}" if o.get("momentum") else "")
    return f"{arch}, {opt}"


def collect(reports: Path, setups: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(status per claim x setup, the pooled primary tests of every setup, setups without a report)."""
    status, tests, missing = [], [], []
    for name, params in setups.items():
        tab = reports / name / "tables"
        if not (tab / "verdicts.csv").exists():
            missing.append(name)
            continue
        label = setup_label(params)
        status += [
            {"setup": name, "label": label, "claim": r.key, "title": r.title, "kind": r.kind, "status": r.status}
            for r in pd.read_csv(tab / "verdicts.csv").itertuples()
        ]
        if (tab / "primary_tests.csv").exists():
            t = pd.read_csv(tab / "primary_tests.csv")
            tests.append(t[t["role"] == "test"].assign(setup=name, label=label))
    found = [t for t in tests if len(t)]
    return pd.DataFrame(status), (pd.concat(found, ignore_index=True) if found else pd.DataFrame()), missing


def matched(tests: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """One row per primary test (claim, test key, endpoint): effect / ci_lo / ci_hi / p_holm / status
    per setup label (NaN where that setup has no such test)."""
    where = ["claim", "test", "endpoint", "unit"]
    cols = where + [f"{x} {lab}" for lab in order for x in ("effect", "ci_lo", "ci_hi", "p_holm", "status")]
    if tests.empty:
        return pd.DataFrame(columns=cols)
    rows: dict = {}
    for r in tests.itertuples(index=False):
        row = rows.setdefault((r.claim, r.test, r.endpoint), {f: getattr(r, f) for f in where})
        row.update({f"{x} {r.label}": getattr(r, x) for x in ("effect", "ci_lo", "ci_hi", "p_holm", "status")})
    return pd.DataFrame(list(rows.values())).reindex(columns=cols)


def draw(ends: pd.DataFrame, claim: str, order: list[str], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = ends[ends["claim"] == claim] if len(ends) else ends
    if d.empty:
        return False
    keys = list(dict.fromkeys(d["test"]))
    fig, axes = plt.subplots(1, len(keys), figsize=((1.6 + 1.1 * len(order)) * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        t = d[d["test"] == key].set_index("label").reindex(order)
        ax.errorbar(
            range(len(order)),
            t["effect"],
            yerr=[t["effect"] - t["ci_lo"], t["ci_hi"] - t["effect"]],
            fmt="o",
            ms=4,
            lw=1,
        )
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")  # every primary endpoint is centred: 0 = no effect
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{t['endpoint'].dropna().iloc[0]} ({t['unit'].dropna().iloc[0]})", fontsize=8)
        ax.set_title(f"{key}: effect, 95% CI over (data set, seed) clusters", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _lr_text(lr: float, lrs: list[float]) -> str:
    """A largest trained lr as the report reads it: "< x" where no lr of the grid trained (x its smallest),
    ">= x" where its largest did (censored at the grid's top)."""
    if not pd.notna(lr):
        return f"< {min(lrs):g}" if lrs else "none"
    return f">= {lr:g}" if lrs and lr >= max(lrs) else f"{lr:g}"


def largest_by_setup(reports: Path, setups: dict[str, dict]) -> pd.DataFrame:
    """Per setup and data set: the largest trained lr (every seed trained; the setup report's
    tables/largest_trained_lr.csv) of claim 4's deciding detached variants, their first twin and bn -- the
    depth (and optimizer) trend of the blow-up, detached vs twin."""
    rows = []
    for name, params in setups.items():
        path = reports / name / "tables" / "largest_trained_lr.csv"
        if not path.exists():
            continue
        t = pd.read_csv(path)
        rep = params.get("report", {})
        deciders = list(rep.get("blowup_deciders", []))
        twins = [rep.get("twins", {}).get(d, [None])[0] for d in deciders[:1]]
        lrs = [float(x) for x in params.get("optim", {}).get("lrs", [])]
        for ds, g in t.groupby("dataset", sort=False):
            lr = dict(zip(g["variant"], g["largest_trained_lr"]))
            row = {
                "setup": name,
                "label": setup_label(params),
                "depth": params.get("model", {}).get("depth"),
                "dataset": ds,
            }
            for v in [*deciders, *[w for w in twins if w], "bn"]:
                if v in lr:
                    row[v] = _lr_text(lr[v], lrs)
            rows.append(row)
    return pd.DataFrame(rows)


def _largest_md(largest: pd.DataFrame) -> list[str]:
    if largest.empty:
        return []
    cols = [c for c in largest.columns if c not in ("setup", "label", "depth", "dataset")]
    det, twin = (cols[0], cols[-2]) if len(cols) >= 3 else (None, None)
    trend = "; ".join(
        f"{r.label} ({r.dataset}): {getattr(r, det)} vs {getattr(r, twin)}"
        for r in largest.itertuples()
        if det and twin and pd.notna(getattr(r, det)) and pd.notna(getattr(r, twin))
    )
    shown = largest.drop(columns=["setup"]).rename(columns={"label": "setup"}).fillna("–")
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in shown.itertuples(index=False)]
    return [
        "## Claim 4 against depth: the largest trained lr, detached vs twin",
        "",
        "The largest lr at which every seed trained (each setup's tables/largest_trained_lr.csv; `< x`: no lr of "
        "that setup's grid, whose smallest is x; `>= x`: its largest) of claim 4's deciding detached variants, their gradient-through "
        "twin and bn. " + (f"{det} vs {twin}: {trend}." if trend else ""),
        "",
        *lines,
        "",
        "Table: [tables/largest_by_setup.csv](tables/largest_by_setup.csv).",
        "",
    ]


def build(
    out: Path,
    study: str,
    status: pd.DataFrame,
    ends: pd.DataFrame,
    missing: list[str],
    largest: pd.DataFrame | None = None,
) -> None:
    (out / "tables").mkdir()
    (out / "figures").mkdir()
    status.to_csv(out / "tables" / "by_setup.csv", index=False)
    order = list(dict.fromkeys(status["label"])) if len(status) else []
    matched(ends, order).to_csv(out / "tables" / "primary_by_setup.csv", index=False)
    md = [
        f"# {study}: do the claims depend on depth, architecture and optimizer?",
        "",
        "Each setup is the same grid under other model/optimizer settings, with its own report (linked). "
        "Statuses are those reports' verdicts, each decided by its primary test(s) (Holm within that "
        "report; 'negligible' takes precedence over a significant p when the interval lies inside the smallest "
        "effect); the table per claim gives each test's own status. Each test's sign is its endpoint's: "
        "+ = the claim's subject minus its control (claim 2: 1 - kappa, + = b's drive decays no faster than 1/t, "
        "unbounded; claim 3: standardizing worse).",
        "",
    ]
    if missing:
        md += [f"Setups without a report yet (not compared): {', '.join(missing)}.", ""]
    if len(status):
        piv = status.pivot_table(
            index=["claim", "title"], columns="label", values="status", aggfunc="first", sort=False
        )[order]
        md += ["## Status per setup", "", "| claim | " + " | ".join(order) + " |", "|---|" + "---|" * len(order)]
        for (claim, title), r in piv.iterrows():
            md.append(f"| {claim}: {title} | " + " | ".join(str(v) for v in r) + " |")
        md += [
            "",
            "Setups: "
            + "; ".join(
                f"[{lab}]({s}/report.md) (`{s}`)" for s, lab in dict(zip(status["setup"], status["label"])).items()
            ),
            "",
        ]
        if largest is not None and len(largest):
            largest.to_csv(out / "tables" / "largest_by_setup.csv", index=False)
            md += _largest_md(largest)
        md += ["## Per claim", ""]
        for claim in dict.fromkeys(status.loc[status["kind"] == "measurement", "claim"]):
            rows = status[status["claim"] == claim]
            md += [
                f"### {claim}: {rows['title'].iloc[0]}",
                "",
                "| setup | test status | primary test | effect [95% CI] | Holm p |",
                "|---|---|---|---|---|",
            ]
            mine = ends[ends["claim"] == claim] if len(ends) else ends
            for r in rows.itertuples():
                for t in mine[mine["setup"] == r.setup].itertuples() if len(mine) else []:
                    md.append(
                        f"| {r.label} | {t.status} | {t.test}: {t.endpoint} | {t.effect:+.3g} "
                        f"[{t.ci_lo:+.3g}, {t.ci_hi:+.3g}] {t.unit} | {t.p_holm:.2g} |"
                    )
            if draw(ends, claim, order, out / "figures" / f"{claim}.png"):
                md += [
                    "",
                    f"![{claim}](figures/{claim}.png)",
                    "",
                    "Every setup's primary test(s) of this claim, matched by test and endpoint: "
                    "[tables/primary_by_setup.csv](tables/primary_by_setup.csv).",
                ]
            md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.compare"), description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, help="the study file (studies/<name>.yaml)")
    ap.add_argument("--reports", required=True, help="the study's report folder (one subfolder per setup)")
    args = ap.parse_args(argv)
    from pipeline import records
    from pipeline.config import ConfigError, die
    from pipeline.study_file import load_study

    try:
        name, setups = load_study(args.study)
    except ConfigError as err:
        die(str(err))
    clash = RESERVED & set(setups)
    if clash:
        die(f"{args.study}: setups.{sorted(clash)[0]}: reserved name (the comparison writes it)")
    reports = Path(args.reports)
    try:
        records.check_report_out(reports, "--reports")  # someone's own folder is refused before any work
        status, ends, missing = collect(reports, setups)
        largest = largest_by_setup(reports, setups)
    except records.RecordError as err:
        die(str(err))
    if status.empty:
        die(f"{reports}: no setup report found (run: python -m pipeline.study {args.study})")
    records.write_tree_atomically(
        reports, lambda tmp: build(tmp, name, status, ends, missing, largest), marker=records.REPORT_MARKER
    )
    print(f"wrote {reports / 'report.md'} ({status['setup'].nunique()} setups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
