"""Does a claim depend on depth, architecture or optimizer? Compares one study's per-setup reports.

    python -m pipeline.compare --study studies/deep.yaml --reports reports/deep

Reads what each setup's report wrote (tables/verdicts.csv; tables/<claim>.csv, the endpoints
table with every endpoint, whether it decided and whether it is the claim's primary endpoint,
read through its owner pipeline.claims.endpoint_table) and writes, beside them, report.md,
tables/by_setup.csv, tables/primary_by_setup.csv (each decided primary endpoint matched across
setups by its fields, Endpoint.key, never by its display text) and one figure per measured
claim: its primary endpoint across setups. Nothing is re-judged here: each status is the one its
setup's report computed with its own rule, and the primary endpoint is the one its registry named.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pipeline.claims.endpoint_table import read_endpoint_table, with_keys
from pipeline.spec.endpoints import WHERE

RESERVED = {"figures", "tables", "report.md"}


def setup_label(params: dict) -> str:
    m, o = params["model"], params["optim"]
    arch = (f"cnn {m.get('depth')}x{m.get('channels', 16)}" if m.get("kind") == "cnn"
            else f"mlp {m.get('depth')}x{m.get('width')}")
    opt = o.get("name", "sgd") + (f" m={o['momentum']:g}" if o.get("momentum") else "")
    return f"{arch}, {opt}"


def collect(reports: Path, setups: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(status per claim x setup, decided endpoints of every setup, setups without a report)."""
    status, endpoints, missing = [], [], []
    for name, params in setups.items():
        tab = reports / name / "tables"
        if not (tab / "verdicts.csv").exists():
            missing.append(name)
            continue
        label = setup_label(params)
        for r in pd.read_csv(tab / "verdicts.csv").itertuples():
            row = {"setup": name, "label": label, "claim": r.key, "title": r.title, "kind": r.kind,
                   "status": r.status}
            e = read_endpoint_table(tab / f"{r.key}.csv")
            if e is not None:  # an endpoints table (claim 1 writes its own table instead)
                dec = e[e["decides"]]
                row.update(decided=len(dec), above=int((dec["ci_lo"] > 0).sum()), below=int((dec["ci_hi"] < 0).sum()))
                if r.kind == "measurement":
                    endpoints.append(with_keys(dec[dec["primary"]]).assign(setup=name, label=label, claim=r.key))
            else:
                row.update(decided=float("nan"), above=float("nan"), below=float("nan"))
            status.append(row)
    ends = pd.concat([e for e in endpoints if len(e)], ignore_index=True) if any(len(e) for e in endpoints) \
        else pd.DataFrame()
    return pd.DataFrame(status), ends, missing


def matched(ends: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The decided primary endpoints matched across setups by Endpoint.key (measure, variant, twin,
    data set, lr, layer, ...): one row per claim and key, its fields, then effect / ci_lo / ci_hi per
    setup label (NaN where that setup has no such endpoint). Equal display text does not match
    endpoints whose fields differ."""
    where = ["measure", *WHERE]
    cols = ["claim", *where, "detail"] + [f"{x} {lab}" for lab in order for x in ("effect", "ci_lo", "ci_hi")]
    if ends.empty:
        return pd.DataFrame(columns=cols)
    rows: dict = {}
    for r in ends.itertuples(index=False):
        row = rows.setdefault((r.claim, r.key), {"claim": r.claim, **{f: getattr(r, f) for f in where},
                                                 "detail": r.detail})
        row.update({f"effect {r.label}": r.effect, f"ci_lo {r.label}": r.ci_lo, f"ci_hi {r.label}": r.ci_hi})
    return pd.DataFrame(list(rows.values())).reindex(columns=cols)


def draw(ends: pd.DataFrame, claim: str, order: list[str], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = ends[ends["claim"] == claim] if len(ends) else ends
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(order), 3.4))
    for i, label in enumerate(order):
        g = d[d["label"] == label]
        x = [i] * len(g)
        ax.errorbar(x, g["effect"], yerr=[g["effect"] - g["ci_lo"], g["ci_hi"] - g["effect"]], fmt="o", ms=3,
                    alpha=0.6, lw=0.8)
    ax.axhline(0.5 if claim == "claim2" else 0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(d["measure"].iloc[0], fontsize=8)
    ax.set_title(f"{claim}: one point per decided comparison (95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def build(out: Path, study: str, status: pd.DataFrame, ends: pd.DataFrame, missing: list[str]) -> None:
    (out / "tables").mkdir()
    (out / "figures").mkdir()
    status.to_csv(out / "tables" / "by_setup.csv", index=False)
    order = list(dict.fromkeys(status["label"])) if len(status) else []
    matched(ends, order).to_csv(out / "tables" / "primary_by_setup.csv", index=False)
    md = [f"# {study}: do the claims depend on depth, architecture and optimizer?", "",
          "Each setup is the same grid under other model/optimizer settings, with its own report (linked). "
          "Statuses are those reports' verdicts, each by its own pre-declared rule; counts are the decided "
          "comparisons whose 95% interval lies above / below 0 (+ = the claim's direction).", ""]
    if missing:
        md += [f"Setups without a report yet (not compared): {', '.join(missing)}.", ""]
    if len(status):
        piv = status.pivot_table(index=["claim", "title"], columns="label", values="status", aggfunc="first",
                                 sort=False)[order]
        md += ["## Status per setup", "", "| claim | " + " | ".join(order) + " |",
               "|---|" + "---|" * len(order)]
        for (claim, title), r in piv.iterrows():
            md.append(f"| {title} | " + " | ".join(str(v) for v in r) + " |")
        md += ["", "Setups: " + "; ".join(f"[{lab}]({s}/report.md) (`{s}`)" for s, lab in
                                          dict(zip(status["setup"], status["label"])).items()), ""]
        md += ["## Per claim", ""]
        for claim in dict.fromkeys(status.loc[status["kind"] == "measurement", "claim"]):
            rows = status[status["claim"] == claim]
            md += [f"### {rows['title'].iloc[0]}", "",
                   "| setup | status | decided | above 0 | below 0 |", "|---|---|---|---|---|"]
            md += [f"| {r.label} | {r.status} | {r.decided:.0f} | {r.above:.0f} | {r.below:.0f} |"
                   for r in rows.fillna(0).itertuples()]
            if draw(ends, claim, order, out / "figures" / f"{claim}.png"):
                md += ["", f"![{claim}](figures/{claim}.png)", "",
                       f"Primary endpoint: {ends.loc[ends['claim'] == claim, 'measure'].iloc[0]}; each decided "
                       "comparison matched across setups by its fields: "
                       "[tables/primary_by_setup.csv](tables/primary_by_setup.csv)."]
            md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
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
    except records.RecordError as err:
        die(str(err))
    except ValueError as err:  # a setup's endpoints table the reader refuses (an older layout)
        die(str(err))
    if status.empty:
        die(f"{reports}: no setup report found (run: python -m pipeline.study {args.study})")
    records.write_tree_atomically(reports, lambda tmp: build(tmp, name, status, ends, missing),
                                  marker=records.REPORT_MARKER)
    print(f"wrote {reports / 'report.md'} ({status['setup'].nunique()} setups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
