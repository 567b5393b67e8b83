"""Figure 5, start-up: seconds from launching `python -m pipeline.train` (NORMLAB_T0 is set just
before the launch, so interpreter start counts) to the call of trainer.fit: timing.startup_s,
cold (NORMLAB_WARM=0) and warm (after `python -m pipeline.warm status` says up). <= 2 s (issue 21).
Its CLI runs of the default cell (ctx.cli) are what figures 4 and 7 read.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import DEFAULT_CELL, Context, Table, cli_cell, ensure_warm, problem, stats

STARTUP_TARGET_S = 2.0  # issue 21: launch to trainer.fit, cold and warm
WARM_SKIPPED = "skipped: the warm server did not come up within 60 s"


def cli_default(params_path: Path, repeats: int, env: dict, tmp: Path) -> dict:
    """The default cell through `python -m pipeline.train`, cold then warm (figures 4, 5, 7)."""
    v, d = DEFAULT_CELL
    cold_env = {**env, "NORMLAB_WARM": "0"}
    cold = [cli_cell(v, d, params_path, tmp / f"cold{r}", cold_env) for r in range(repeats)]
    warm = []
    for r in range(repeats):
        if not ensure_warm(env):  # each time: an edit of pipeline/ retires the server it finds
            break
        warm.append(cli_cell(v, d, params_path, tmp / f"warm{r}", env))
    return {"cold": cold, "warm": warm}


def cold_and_warm(cli: dict, figure) -> dict:
    """`figure` of the cold runs and of the warm ones (or why there are none), from cli_default's runs."""
    out = {"cold": figure(cli["cold"])}
    if cli["warm"]:
        out["warm"] = figure(cli["warm"])
    else:
        out["warm_skipped"] = WARM_SKIPPED
    return out


def measure(ctx: Context) -> dict:
    ctx.cli.update(cli_default(ctx.params_path, ctx.repeats, ctx.env, ctx.tmp / "cli"))
    return cold_and_warm(ctx.cli, lambda runs: stats(r["timing"]["startup_s"] for r in runs))


def rows(s: dict, table: Table) -> None:
    for mode in ("cold", "warm"):
        if problem(s) or mode not in s:
            table.add(f"5 start-up s ({mode})", problem(s) or s.get(f"{mode}_skipped"))
        else:
            table.add(
                f"5 start-up s ({mode})",
                s[mode],
                target=f"<= {STARTUP_TARGET_S:g} s",
                met=s[mode]["median"] <= STARTUP_TARGET_S,
            )
