"""The Lightning callback that hands a cell's measured history to its tracker.

    from pipeline.tracking.callback import TrackingCallback   # used by pipeline.cell.run_cell

Apart from pipeline/tracking/runs.py so that reading MLflow records (the report, the orphan sweep)
does not import torch and Lightning.
"""

from __future__ import annotations

import fnmatch

import pytorch_lightning as pl


class TrackingCallback(pl.Callback):
    """Sends the module's new history to the member runs every `flush_every` steps.

    A member's rows stop at the step it diverged (that step's value included).
    """

    def __init__(self, tracker):  # a CellTracker, or a pipeline.tracking.process.TrackerProcess
        self.tracker = tracker
        self._loss_sent = 0  # steps of loss_hist already sent
        self._rec_sent = 0  # entries of module.records already sent
        self._keys: dict[str, bool] = {}  # metric name -> matches tracking.metrics

    def flush(self, module, upto: int, final: bool = False) -> None:
        losses = module.loss_hist[self._loss_sent : upto].cpu().numpy()
        records = [
            (t, {k: v.detach().cpu().numpy() for k, v in d.items()}) for t, d in module.records[self._rec_sent :]
        ]
        last = module.diverged_step.cpu().numpy()
        diverged = {m: int(s) for m, s in enumerate(last) if s >= 0}
        every, steps = self.tracker.cell.tracking.log_every, self.tracker.cell.train.steps
        patterns = self.tracker.cell.tracking.metrics

        def sent(t, stop):  # decimated to tracking.log_every; the last step and the divergence step always go
            return (stop is None or t <= stop) and (t % every == 0 or t >= steps - 1 or t == stop)

        out = {}
        for m in range(module.model.members):
            stop = last[m] if last[m] >= 0 else None
            rows = (
                [
                    (self._loss_sent + i, "loss", losses[i, m])
                    for i in range(len(losses))
                    if sent(self._loss_sent + i, stop)
                ]
                if self._tracked("loss", patterns)
                else []
            )
            rows += [
                (t, k, v[m]) for t, d in records if sent(t, stop) for k, v in d.items() if self._tracked(k, patterns)
            ]
            if rows:
                out[m] = rows
        if out or final:
            self.tracker.log_rows(out, final=final, diverged=diverged if final else None)
        self._loss_sent, self._rec_sent = upto, len(module.records)

    def _tracked(self, key: str, patterns) -> bool:
        if key not in self._keys:
            self._keys[key] = any(fnmatch.fnmatchcase(key, p) for p in patterns)
        return self._keys[key]

    def on_train_start(self, trainer, pl_module):
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "x_train", None) is not None:
            self.tracker.log_dataset(dm.x_train.numpy(), dm.y_train.numpy())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        every, done = self.tracker.cell.tracking.flush_every, pl_module.steps_done
        if done // every > self._loss_sent // every:  # a multiple of flush_every passed in this batch
            self.flush(pl_module, done)

    def on_train_end(self, trainer, pl_module):
        pl_module.on_train_end()  # make sure the final state row exists before the last flush
        self.flush(pl_module, pl_module.cell.train.steps, final=True)
