"""One grid cell, start to finish: a variant on a data set, all its members (lr x seed) stacked.

    from pipeline.cell import run_cell, Launch, launch
    summary = run_cell(cell, "runs/bn-synthetic")     # a CellSettings -> trained, recorded, written
    code = launch(Launch("bn", "synthetic", "runs/bn-synthetic"))   # the same as a command: exit status

`run_cell(cell, out)` validates the data set, trains with Lightning on the best available
accelerator, records every member in MLflow (parent run = cell, child run = member) and writes,
atomically, into `out`:
  history.parquet  one row per (member, step): loss every step, norms/gradients every
                   train.log_every steps, full-train and validation metrics every eval_every
  summary.json     per member: lr, seed, diverged (and at which step), final numbers, per-layer
                   stats as a list (pipeline.spec.records.CellSummary)
  config.json      the cell's resolved settings
The folder goes in only after every MLflow run is closed FINISHED: when the tracking store fails
(a server that died mid-cell), run_cell raises pipeline.tracking.runs.TrackingError and `out` is
left as it was, so a cell is never complete on disk without its records.
`launch(Launch(...))` is what the training command runs once its arguments are parsed: the params
file read and validated (one error line and exit 2 on a bad setting, before any work), run_cell,
one summary line; Ctrl-C or SIGTERM ends it with 130 and its MLflow runs KILLED (also while the
tracking process is still connecting); a tracking failure (pipeline/tracking/failures.py: the store,
what happened, what to do) or a full disk under --out (records.WriteError) is one line and exit 1.

Who calls it: `python -m pipeline.train` (pipeline/train.py: the command line, cold), a child of the
warm server (pipeline/warm/server.py: the same Launch, forked warm), the local executor's workers
and Ray's tasks (pipeline/executors/: run_cell). This module knows none of them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

_T0 = time.time()  # start-up is measured from here (imports included), or from NORMLAB_T0

# only the standard library at import: the training command imports this module before it knows
# whether a warm server will run the cell; torch, pandas, Lightning are imported where they are used
# (pipeline/__init__.py keeps the process single-threaded: its MLflow records are written by a fork)


@dataclass(frozen=True)
class Launch:
    """One cell as the training command asks for it (its parsed arguments); JSON-able, so the warm
    server's child gets exactly what the command line said."""

    variant: str
    dataset: str
    out: str
    params: str = "params.yaml"
    no_track: bool = False

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj) -> Launch:
        """A Launch from its JSON form; ValueError on anything else (unknown or missing keys, wrong types)."""
        kinds = {f.name: (bool if f.name == "no_track" else str) for f in fields(cls)}
        if not isinstance(obj, dict) or set(obj) != set(kinds):
            raise ValueError(f"a launch has the keys {sorted(kinds)}")
        for key, kind in kinds.items():
            if type(obj[key]) is not kind:
                raise ValueError(f"launch.{key}: must be a {kind.__name__}")
        return cls(**obj)


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning_fabric", "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Total length of `DataLoader`.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=".*`val_dataloader` but have no `validation_step`.*")


def history_frame(module, members: list[tuple[float, int]]):
    """Wide table, one row per (member, step); rows after a member's divergence dropped."""
    import numpy as np
    import pandas as pd

    losses = module.loss_hist.cpu().numpy()
    steps, m = losses.shape
    frame = pd.DataFrame(
        {"member": np.repeat(np.arange(m), steps), "step": np.tile(np.arange(steps), m), "loss": losses.T.reshape(-1)}
    )
    if module.records:
        # one (record step x member) array per key; a step recorded twice keeps each member's last
        # non-NaN value (as a pivot with aggfunc "last" would)
        record_steps = sorted({int(t) for t, _ in module.records})
        row = {t: i for i, t in enumerate(record_steps)}
        columns: dict[str, np.ndarray] = {}
        for t, d in module.records:
            for k, v in d.items():
                values = v.detach().cpu().numpy().astype(np.float64)
                col = columns.setdefault(k, np.full((len(record_steps), m), np.nan))
                logged = ~np.isnan(values)
                col[row[int(t)], logged] = values[logged]
        wide = pd.DataFrame(
            {
                "member": np.repeat(np.arange(m), len(record_steps)),
                "step": np.tile(np.asarray(record_steps, dtype=np.int64), m),
                **{k: columns[k].T.reshape(-1) for k in sorted(columns)},
            }
        )
        frame = frame.merge(wide, on=["member", "step"], how="outer")
    frame.insert(1, "lr", [members[j][0] for j in frame["member"]])
    frame.insert(2, "seed", [members[j][1] for j in frame["member"]])
    div = module.diverged_step.cpu().numpy()
    last = np.where(div >= 0, div, np.iinfo(np.int64).max)[frame["member"].to_numpy()]
    return frame[frame["step"].to_numpy() <= last].sort_values(["member", "step"]).reset_index(drop=True)


def _value(row, col: str) -> float:
    """A column's value in one member's row of `groupby("member").last()` / `.first()` (pandas skips
    NaN there: the last / first value the member logged), NaN where the history lacks the column."""
    return float(row[col]) if col in row.index else float("nan")


# their last value per member goes in the summary (mean_dir_*: the dense first layer only)
PER_LAYER_FINAL = ("W_norm", "b_norm", "b_drift", "mean_dir_W", "mean_dir_drift")
PER_LAYER_INIT = ("W_norm", "b_norm", "mean_dir_W")  # ... and their value at init, as "<name>0"
# full_loss_eval_bema: inference mode with b's lag removed (pipeline/module.py; NaN where it is not measured)
EVALS = (
    "full_loss_train",
    "full_acc_train",
    "full_loss_eval",
    "full_acc_eval",
    "val_loss_eval",
    "val_acc_eval",
    "full_loss_eval_bema",
)


def _drive_end(h, layer: int) -> dict:
    """drive_end_sq, drive_end_var: b's drive over the last logged window of one member (pipeline.drive.
    window_moments on its mean ||sum G|| / n and the increase of sum ||G||^2 over it); {} without the columns."""
    import numpy as np

    from pipeline.drive import window_moments
    from pipeline.spec.records import layer_column

    win, sq = layer_column("drive_win", layer), layer_column("gsq_cum", layer)
    if win not in h or sq not in h:
        return {}
    sq_values = h[sq].to_numpy(dtype=float)
    logged = np.flatnonzero(~np.isnan(sq_values))  # the rows where the drive was logged
    win_last = h[win].to_numpy(dtype=float)[logged[-1]] if len(logged) else float("nan")
    if len(logged) < 2 or np.isnan(win_last):
        return {"drive_end_sq": float("nan"), "drive_end_var": float("nan")}
    steps = h["step"].to_numpy()
    n = float(steps[logged[-1]] - steps[logged[-2]])
    mean_sq, var = window_moments(win_last, sq_values[logged[-1]] - sq_values[logged[-2]], n)
    return {"drive_end_sq": float(mean_sq), "drive_end_var": float(var)}


def _layer_stats(h, last, first, layer: int, ema_momentum: float | None = None):
    """Hidden layer `layer`'s LayerStats of one member, from its history rows `h` and its rows of the
    history's per-member last / first logged values: a quantity whose column the history lacks (no b
    in this layer) is left None. `ema_momentum`: the momentum of the running mean that holds EMA(b) in
    this layer (None where the module does not follow it)."""
    from pipeline.spec.records import LayerStats, layer_column

    stats = {}
    for name in PER_LAYER_FINAL:
        if layer_column(name, layer) in h:
            stats[name] = _value(last, layer_column(name, layer))
    for name in PER_LAYER_INIT:
        if layer_column(name, layer) in h:
            stats[f"{name}0"] = _value(first, layer_column(name, layer))
    gsum = layer_column("gsum_cum", layer)
    if gsum in h:  # ||sum_t G_t|| / sum_t ||G_t||: 1 = a persistent drive of b
        total = _value(last, layer_column("gabs_cum", layer))
        stats["gsum_persist"] = _value(last, gsum) / total if total > 0 else float("nan")
    stats.update(_drive_end(h, layer))
    if layer_column("b_lag", layer) in h and ema_momentum is not None:
        stats["b_lag"], stats["ema_momentum"] = _value(last, layer_column("b_lag", layer)), float(ema_momentum)
    stats.setdefault("W_norm", float("nan"))
    stats.setdefault("W_norm0", float("nan"))
    return LayerStats(layer=layer, **stats)


def summarize(cell, history, module, members, input_mean_norm: float, classes: int):
    """The cell's summary.json, a pipeline.spec.records.CellSummary."""
    import math

    from pipeline.records import config_hash
    from pipeline.spec.records import CellSummary, MemberSummary

    div = module.diverged_step.cpu().numpy()
    depth = len(module.has_bias)  # one entry per hidden layer
    momenta = {i: float(module._hidden[i][1].momentum) for i in module._b_ema}  # the EMAs that hold EMA(b)
    # every member's last and first logged value of every column at once (one pass, not one per column)
    by_member = history.groupby("member", sort=True)
    lasts, firsts, rows = by_member.last(), by_member.first(), dict(iter(by_member))
    out = []
    for j, (lr, seed) in enumerate(members):
        h, last, first = rows[j], lasts.loc[j], firsts.loc[j]
        tail = h["loss"].tail(max(1, len(h) // 10))
        diverged = bool(div[j] >= 0)
        evals = {
            col: _value(last, col) if not diverged else float("nan")  # NaN for a member that diverged before it
            for col in EVALS
        }
        out.append(
            MemberSummary(
                member=j,
                lr=float(lr),
                seed=int(seed),
                diverged=diverged,
                diverged_step=int(div[j]) if diverged else None,
                initial_loss=float(h["loss"].head(10).mean()),
                final_loss=float(tail.mean()),
                init_full_loss_train=_value(first, "full_loss_train"),
                init_full_acc_train=_value(first, "full_acc_train"),
                **evals,
                layers=[_layer_stats(h, last, first, i, momenta.get(i)) for i in range(depth)],
            )
        )
    return CellSummary(
        cell=cell.name,
        variant=cell.variant_name,
        dataset=cell.dataset_name,
        norm=cell.variant.norm,
        steps=cell.train.steps,
        input_mean_norm=float(input_mean_norm),
        classes=int(classes),
        chance_loss=math.log(classes),
        config_hash=config_hash(cell),
        members=out,
    )


def step_progress_bar(steps: int, steps_per_batch: int):
    """Lightning's bar counts batches, and a batch here is `steps_per_batch` optimizer steps
    (pipeline.data.sets.StepChunks): this one counts the steps ("200/200 step", not "8/8")."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    class StepProgressBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *rest):
            super().on_train_epoch_start(trainer, *rest)
            self.train_progress_bar.total, self.train_progress_bar.unit = steps, "step"

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.train_progress_bar.n = min((batch_idx + 1) * steps_per_batch, steps)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the line

    return StepProgressBar(refresh_rate=1)


def run_cell(cell, out: str | Path, stage: str | None = None, track: bool | None = None, progress: bool | None = None):
    """Train every member of `cell` (a CellSettings), record it, write `out`; returns a
    records.CellRun: the typed summary and the run's meta (timing, MLflow run ids)."""
    import pytorch_lightning as pl
    import torch

    from pipeline.data.sets import StackedDataModule
    from pipeline.module import STEPS_PER_BATCH, NormLabModule
    from pipeline.nets.build import build_model
    from pipeline.tracking.callback import TrackingCallback
    from pipeline.tracking.process import make_tracker

    _quiet_lightning()
    from pipeline import records
    from pipeline.data.sets import preflight
    from pipeline.spec.names import stage_name

    t_cell = time.perf_counter()  # the cell's own wall time (cell_s): from here until its runs are closed
    track = cell.tracking.enabled if track is None else track
    progress = sys.stderr.isatty() if progress is None else progress
    members = cell.members()
    stage = stage or stage_name(cell.name)
    out = records.check_out(out)  # before any work: never replace what normlab did not write
    preflight(cell)  # the data set loads and fits the settings, before any run is recorded
    tracker = make_tracker(cell, members, stage) if track else None
    if cell.train.threads:
        torch.set_num_threads(cell.train.threads)
    status, summary, meta, written, staged, history = "FAILED", None, {}, None, None, None
    try:
        if tracker:
            tracker.start()  # an unreachable store fails here, before any training
        t_setup = time.perf_counter()
        pl.seed_everything(0, verbose=False)  # members draw from their own seeded generators
        seeds = [s for _, s in members]
        dm = StackedDataModule(
            cell.dataset,
            seeds,
            cell.optim.batch_size,
            cell.train.steps,
            flatten=cell.model.kind == "mlp",  # an MLP reads images flattened
            chunk=STEPS_PER_BATCH,
        )
        model = build_model(dm.input_shape, dm.num_classes, seeds, cell.model, cell.variant)
        module = NormLabModule(
            model,
            cell,
            [lr for lr, _ in members],
            input_mean=dm.input_mean,
            x_train=dm.x_train if model.uses_population() else None,
            eval_sets=dm.full_sets(),
        )
        callbacks = [TrackingCallback(tracker)] if tracker else []
        if progress:
            callbacks.append(step_progress_bar(cell.train.steps, STEPS_PER_BATCH))
        trainer = pl.Trainer(
            accelerator=cell.train.accelerator,
            devices=1,
            max_steps=cell.train.steps,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,  # the module evaluates the full sets itself, on copies
            deterministic=True,
            callbacks=callbacks,
            enable_progress_bar=progress,
        )
        t_fit, t_fit_wall = time.perf_counter(), time.time()
        try:
            trainer.fit(module, datamodule=dm)
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C / SIGTERM into exit(1): keep it an interrupt
                raise KeyboardInterrupt from None
            raise
        t_done = time.perf_counter()
        history = history_frame(module, members)
        t_start = float(os.environ.get("NORMLAB_T0", _T0))
        timing = {
            "startup_s": t_fit_wall - t_start,
            "setup_s": t_fit - t_setup,
            "fit_s": t_done - t_fit,
            "per_step_ms": 1e3 * (t_done - t_fit) / cell.train.steps,
            "tracking_s": tracker.seconds if tracker else 0.0,
            "members": len(members),
            # the device it trained on: Lightning's teardown has moved the module back to the CPU by now
            "device": str(trainer.strategy.root_device),
        }
        summary = summarize(cell, history, module, members, float(dm.input_mean.norm()), dm.num_classes)
        meta = {"cell": cell.name, "timing": timing}
        # complete beside `out`, not yet in it: it goes in only once every run is closed FINISHED
        staged = records.stage_cell(out, history, summary, records.cell_config(cell))
        written = records.outputs_hash(staged)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        from pipeline.tracking.runs import signals_deferred

        # a Ctrl-C now waits until the runs are closed and the folder is in: never FINISHED runs without it
        with signals_deferred():
            try:
                if tracker:  # a TrackingError (runs not recorded or not closed) leaves `out` as it was
                    files = [staged / f for f in records.FILES] if written else []
                    tracker.finish(status, summary, files, written, history=history if written else None)
                if meta:
                    meta["timing"]["cell_s"] = time.perf_counter() - t_cell
                if tracker:
                    if meta:  # the time the cell waited for MLflow (a tracking process works beside it)
                        meta["timing"]["tracking_s"] = tracker.seconds
                        meta["timing"]["tracking_process_s"] = getattr(tracker, "child_seconds", None)
                        meta["mlflow"] = {
                            "tracking_uri": tracker.uri,
                            "experiment_id": tracker.experiment_id,
                            "parent_run_id": tracker.parent_id,
                            "member_run_ids": tracker.child_ids,
                        }
                if status == "FINISHED":
                    records.commit_cell(staged, out)
                    staged = None
                    meta["outputs_hash"] = written  # only beside outputs that were written
                    try:
                        records.write_meta(out, meta)
                    except records.WriteError as err:  # the cell is written; only its run facts are not
                        print(f"normlab: {cell.name}: written, but not its meta file: {err}", file=sys.stderr)
            finally:
                if staged is not None:  # ours, never swapped in: the cell is not written
                    records.discard_staged(staged)
    return records.CellRun(
        summary, records.CellMeta.model_validate(meta)
    )  # after the tracker's finish: its run ids are known only then


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def launch(req: Launch) -> int:
    """The training command's work once its arguments are parsed; returns the exit status
    (a bad setting or record: one line on stderr and SystemExit(2), before any work)."""
    from pipeline.config import ConfigError, cell_settings, die, load_params
    from pipeline.records import RecordError, WriteError
    from pipeline.spec.names import cell_name
    from pipeline.tracking.runs import TrackingError

    try:
        cell = cell_settings(load_params(req.params), req.variant, req.dataset)
        signal.signal(signal.SIGTERM, _sigterm)
        # an unreachable tracking store raises ConfigError from the tracker's start, before work
        run = run_cell(cell, req.out, track=False if req.no_track else None)
    except WriteError as err:  # a full or read-only disk under --out while the cell ran: what was there stays
        print(f"normlab: {cell_name(req.variant, req.dataset)}: {err}; {req.out} not written", file=sys.stderr)
        return 1
    except (ConfigError, RecordError) as err:
        die(str(err))
    except TrackingError as err:  # the store failed mid-cell: nothing was written to --out
        print(f"normlab: {err}; {req.out} not written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"normlab: interrupted: {cell_name(req.variant, req.dataset)} not written, its MLflow runs ended KILLED",
            file=sys.stderr,
        )
        return 130
    n_div = sum(m.diverged for m in run.summary.members)
    t = run.meta.timing
    print(
        f"{cell.name}: {len(run.summary.members)} members, {n_div} diverged, "
        f"{t['per_step_ms']:.2f} ms/step, start-up {t['startup_s']:.1f} s, tracking {t['tracking_s']:.2f} s"
    )
    return 0
