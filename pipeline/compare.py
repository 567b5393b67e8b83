"""Does a claim depend on depth, architecture or optimizer? Compares one study's per-setup reports.

    python -m pipeline.compare --study studies/deep.yaml --reports reports/deep

Reads what each setup's report wrote (tables/verdicts.csv, tables/<claim>.csv with every endpoint
and whether it decided, tables/largest_trained_lr.csv) and writes, beside them, report.md,
tables/by_setup.csv and one figure per measured claim: its primary endpoint across setups. Nothing
is re-judged here: each status is the one its setup's report computed with its own rule.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

# the endpoint of each measured claim that the comparison plots (its unit is shared across setups)
PRIMARY = {"claim1b": "excess |eval-mode - train-mode loss|",
           "claim2": "growth exponent alpha",
           "claim3": "final full-set loss, train mode, matched lr",
           "claim4": "excess blow-up rate (detached minus twin)"}
RESERVED = {"figures", "tables", "report.md"}


def setup_label(params: dict) -> str:
    m, o = params["model"], params["optim"]
    arch = (f"cnn {m.get('depth')}x{m.get('channels', 16)}" if m.get("kind") == "cnn"
            else f"mlp {m.get('depth')}x{m.get('width')}")
    opt = o.get("name", "sgd") + (f" m={o['momentum']:g}" if o.get("momentum") else "")
    return f"{arch}, {opt}"


def _read(f: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(f)
    except (FileNotFoundError, pd.errors.EmptyDataError):  # a claim with no endpoint writes an empty table
        return pd.DataFrame()


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
            f = tab / f"{r.key}.csv"
            e = _read(f)
            if {"endpoint", "ci_lo", "ci_hi", "decides"} <= set(e.columns):  # an endpoint table (not claim 1's)
                dec = e[e["decides"].astype(bool)]
                row.update(decided=len(dec), above=int((dec["ci_lo"] > 0).sum()), below=int((dec["ci_hi"] < 0).sum()))
                if r.key in PRIMARY and "endpoint" in e:
                    endpoints.append(dec[dec["endpoint"] == PRIMARY[r.key]].assign(setup=name, label=label,
                                                                                    claim=r.key))
            else:
                row.update(decided=float("nan"), above=float("nan"), below=float("nan"))
            status.append(row)
    ends = pd.concat(endpoints, ignore_index=True) if endpoints else pd.DataFrame()
    return pd.DataFrame(status), ends, missing


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
    ax.set_ylabel(PRIMARY[claim], fontsize=8)
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
        for claim in PRIMARY:
            rows = status[status["claim"] == claim]
            if rows.empty:
                continue
            md += [f"### {rows['title'].iloc[0]}", "",
                   "| setup | status | decided | above 0 | below 0 |", "|---|---|---|---|---|"]
            md += [f"| {r.label} | {r.status} | {r.decided:.0f} | {r.above:.0f} | {r.below:.0f} |"
                   for r in rows.fillna(0).itertuples()]
            if draw(ends, claim, order, out / "figures" / f"{claim}.png"):
                md += ["", f"![{claim}](figures/{claim}.png)"]
            md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, help="the study file (studies/<name>.yaml)")
    ap.add_argument("--reports", required=True, help="the study's report folder (one subfolder per setup)")
    args = ap.parse_args(argv)
    from pipeline import records
    from pipeline.config import ConfigError, die
    from pipeline.study import load_study

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
    except records.RecordError as err:
        die(str(err))
    status, ends, missing = collect(reports, setups)
    if status.empty:
        die(f"{reports}: no setup report found (run: python -m pipeline.study {args.study})")
    records.write_tree_atomically(reports, lambda tmp: build(tmp, name, status, ends, missing),
                                  marker=records.REPORT_MARKER)
    print(f"wrote {reports / 'report.md'} ({status['setup'].nunique()} setups)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
