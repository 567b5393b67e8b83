"""Figure 3, naive grid: wall seconds of a grid subset (one default cell's members: bn on digits x
5 lrs x 3 seeds = 15 runs, one repeat; --quick: bn x 1 lr x 1 seed, 20 steps) run as one process
per run of benchmarks/naive_run.py (plain LightningModule + MLFlowLogger, five metrics every
step), against normlab's `python -m pipeline.train` per cell (members stacked), both with the
same steps and their own temporary SQLite store, start-up included; normlab cold
(NORMLAB_WARM=0) and warm (default, server up). ratio = naive / normlab, >= 20.
Each naive run's own peak RSS (VmHWM) and wait4's (with its reaped children) are kept for figure 7.
"""

from __future__ import annotations

from benchmarks.common import PY, ROOT, Context, Table, cli_cell, ensure_warm, problem, run_proc, stats, write_params
from benchmarks.reference import init_store
from pipeline.spec.names import cell_name


def measure(ctx: Context) -> dict:
    params, cfg, env, tmp = ctx.params, ctx.cfg, ctx.env, ctx.tmp / "grid"
    variants, dataset = cfg["grid_variants"], "digits"
    lrs, seeds = list(params.optim.lrs[: cfg["grid_lrs"]]), list(params.optim.seeds[: cfg["grid_seeds"]])
    steps = cfg["grid_steps"] or params.train.steps
    repeats = min(ctx.repeats, cfg["grid_repeats"])  # the naive side is minutes per repeat
    tmp.mkdir(parents=True)
    p = write_params(params, tmp / "grid_params.yaml", optim={"lrs": lrs, "seeds": seeds}, train={"steps": steps})
    naive_env = {**env, "MLFLOW_TRACKING_URI": init_store(tmp / "naive_store")}
    normlab_env = {**env, "MLFLOW_TRACKING_URI": init_store(tmp / "normlab_store")}
    naive_cwd = tmp / "naive_cwd"  # MLflow and Lightning may write beside the cwd: not in the repo
    naive_cwd.mkdir()
    naive, cold, warm, rss, hwm = [], [], [], [], []
    for r in range(repeats):
        total = 0.0
        for v, lr, seed in ((v, lr, seed) for v in variants for lr in lrs for seed in seeds):
            res = run_proc(
                [
                    PY,
                    str(ROOT / "benchmarks" / "naive_run.py"),
                    "--lr",
                    str(lr),
                    "--seed",
                    str(seed),
                    "--steps",
                    str(steps),
                    "--width",
                    str(params.model.width),
                    "--depth",
                    str(params.model.depth),
                    "--norm",
                    v,
                    "--threads",
                    str(params.train.threads),
                    "--tracking-uri",
                    naive_env["MLFLOW_TRACKING_URI"],
                ],
                naive_env,
                cwd=naive_cwd,
            )
            total += res["wall_s"]
            rss.append(res["maxrss_mib"])
            if res["hwm_mib"] is not None:
                hwm.append(res["hwm_mib"])
        naive.append(total)
        cold.append(
            sum(
                cli_cell(v, dataset, p, tmp / f"cold{r}" / cell_name(v, dataset), {**normlab_env, "NORMLAB_WARM": "0"})[
                    "wall_s"
                ]
                for v in variants
            )
        )
        if ensure_warm(normlab_env):
            warm.append(
                sum(
                    cli_cell(v, dataset, p, tmp / f"warm{r}" / cell_name(v, dataset), normlab_env)["wall_s"]
                    for v in variants
                )
            )
    na, co = stats(naive), stats(cold)
    out = {
        "runs": len(variants) * len(lrs) * len(seeds),
        "variants": list(variants),
        "dataset": dataset,
        "lrs": lrs,
        "seeds": seeds,
        "repeats": repeats,
        "steps": steps,
        "naive_wall_s": na,
        "normlab_cold_wall_s": co,
        "ratio_cold": na["median"] / co["median"],
        "naive_maxrss_mib": stats(rss),
    }
    if hwm:
        out["naive_hwm_mib"] = stats(hwm)
    if warm:
        wa = stats(warm)
        out.update(normlab_warm_wall_s=wa, ratio_warm=na["median"] / wa["median"])
    else:
        out["normlab_warm"] = "skipped: the warm server did not come up within 60 s"
    return out


def rows(s: dict, table: Table) -> None:
    if problem(s):
        table.add("3 grid wall s: normlab vs naive", problem(s))
        return
    table.add(
        f"3 {s['runs']}-run grid wall s: cold vs naive",
        s["normlab_cold_wall_s"],
        s["naive_wall_s"],
        s["ratio_cold"],
        "ratio >= 20",
        s["ratio_cold"] >= 20,
    )
    if "ratio_warm" in s:
        table.add(
            f"3 {s['runs']}-run grid wall s: warm vs naive",
            s["normlab_warm_wall_s"],
            s["naive_wall_s"],
            s["ratio_warm"],
            "ratio >= 20",
            s["ratio_warm"] >= 20,
        )
    else:
        table.add("3 grid wall s: warm vs naive", s["normlab_warm"])
