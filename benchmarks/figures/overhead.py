"""Figure 1, overhead: ms per training step of the default cell through pipeline.cell.run_cell
(Lightning, measurement hooks, interval evaluation, MLflow tracking on): timing.fit_s / steps;
against a bare PyTorch loop over the same StackedMLP, stacked optimizer, batches and loss (no
Lightning, no tracking, no measurements), run beside it in every repeat. ratio = normlab / bare of
each pair (median [min, max]), <= 1.3; below 1 is flagged. Beside it the same cell evaluated only at
step 0 and the end: the difference is the cost of the interval evaluations on the full sets (ms
per evaluation; a negative one is flagged: the two were timed under different load). In process.
"""

from __future__ import annotations

from benchmarks.common import Context, Table, interleave, pair_ratios, problem, sized, stats
from benchmarks.reference import bare_loop


def measure(ctx: Context) -> dict:
    from pipeline.cell import run_cell

    cell, repeats, tmp = ctx.cell, ctx.repeats, ctx.tmp / "overhead"
    steps = cell.train.steps
    run_cell(sized(cell, steps=5), tmp / "warmup", progress=False)  # first-call costs out of the figures
    bare_loop(sized(cell, steps=5))
    # the same cell evaluated only at step 0 and at the end (train.eval_every past the last step):
    # the difference is what the interval evaluations on the full sets cost
    few_evals = cell.model_copy(update={"train": cell.train.model_copy(update={"eval_every": steps + 1})})
    evals = len(range(0, steps, cell.train.eval_every)) + 1  # evaluations in the default cell
    count = iter(range(10**6))

    def ms_per_step(c) -> float:
        s = run_cell(c, tmp / f"overhead{next(count)}", track=True, progress=False)
        return 1e3 * s.meta.timing["fit_s"] / steps

    # interleaved, the order turning every repeat (bare, normlab, 2 evals; 2 evals, normlab, bare ...),
    # so a change in machine load hits every side
    got = interleave(
        {
            "bare": lambda: 1e3 * bare_loop(cell) / steps,
            "normlab": lambda: ms_per_step(cell),
            "no_eval": lambda: ms_per_step(few_evals),
        },
        repeats,
    )
    normlab, no_eval, bare = got["normlab"], got["no_eval"], got["bare"]
    n, ne, b = stats(normlab), stats(no_eval), stats(bare)
    ratio, ratio_2 = pair_ratios(normlab, bare), pair_ratios(no_eval, bare)  # each run over the bare loop beside it
    return {
        "normlab_ms_per_step": n,
        "bare_ms_per_step": b,
        "ratio": ratio["median"],
        "ratio_spread": ratio,
        "normlab_2_evals_ms_per_step": ne,
        "ratio_2_evals": ratio_2["median"],
        "ratio_2_evals_spread": ratio_2,
        "evaluations": evals,
        # per repeat, the two normlab runs side by side
        "eval_ms_each": stats((a - b) * steps / max(1, evals - 2) for a, b in zip(normlab, no_eval))["median"],
        "steps": steps,
        "members": len(cell.members()),
    }


def rows(s: dict, table: Table) -> None:
    if problem(s):
        table.add("1 overhead ms/step: normlab vs bare torch", problem(s))
        return
    table.ratio(
        "1 overhead ms/step: normlab vs bare torch",
        s["normlab_ms_per_step"],
        s["bare_ms_per_step"],
        s.get("ratio_spread", s["ratio"]),
        "<=",
        1.3,
    )
    table.add(
        f"1 overhead ms/step, 2 evaluations instead of {s['evaluations']}",
        s["normlab_2_evals_ms_per_step"],
        s["bare_ms_per_step"],
        s.get("ratio_2_evals_spread", s["ratio_2_evals"]),
        floor=1,
    )
    table.add("1   one full-set evaluation ms", s["eval_ms_each"])
