"""Figure 4, tracking: share of a default cell's wall time spent in MLflow calls, run through the
CLI (figure 5's runs): timing.tracking_s over the process's wall time (launch to exit), cold and
warm, <= 10%. (tracking_s / (startup_s + fit_s) is in the JSON too; it leaves out the post-fit
part of tracking_s and so overstates the share.)
"""

from __future__ import annotations

from benchmarks.common import Context, Table, problem, scaled, stats
from benchmarks.figures.startup import cold_and_warm

NEEDS = ("startup",)  # its CLI runs


def tracking_share(runs: list[dict]) -> dict:
    """tracking_s over the cell's wall time. The figure is over the whole process (launch to exit):
    tracking_s also counts tracker.finish (artifacts, tags, closing runs), which comes after
    fit_s, so over startup_s + fit_s alone it can pass 100% on a short cell; that ratio is kept too."""
    t = [r["timing"] for r in runs]
    return {
        "share": stats(x["tracking_s"] / r["wall_s"] for x, r in zip(t, runs)),
        "share_of_startup_plus_fit": stats(x["tracking_s"] / (x["startup_s"] + x["fit_s"]) for x in t),
        "tracking_s": stats(x["tracking_s"] for x in t),
        "wall_s": stats(r["wall_s"] for r in runs),
    }


def measure(ctx: Context) -> dict:
    return cold_and_warm(ctx.cli, tracking_share)


def rows(s: dict, table: Table) -> None:
    for mode in ("cold", "warm"):
        if problem(s) or mode not in s:
            table.add(f"4 tracking % of cell wall time ({mode})", problem(s) or s.get(f"{mode}_skipped"))
        else:
            share = s[mode]["share"]
            table.add(
                f"4 tracking % of cell wall time ({mode})",
                scaled(share, 100),
                target="<= 10%",
                met=share["median"] <= 0.10,
            )
