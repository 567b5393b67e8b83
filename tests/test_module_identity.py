"""NormLabModule's per-step fast path writes the same bytes as the plain path it replaced.

    .venv/bin/python -m pytest -q tests/test_module_identity.py

ReferenceModule below is the training step and interval evaluation as they were before the
per-step overhead work (issue 11), verbatim: Lightning's manual_backward and optimizer wrapper
every step, the x_hat gradient hooks on every step, the masking always applied, an inference-mode
pass for every norm, and one Lightning batch per step (STEPS_PER_BATCH = 1). A cell trained through
it and through pipeline.module (5 steps per Lightning batch, so chunks end between evaluation and
log steps and the last one is short) must give byte-identical history.parquet, summary.json and
config.json, for every variant (a member that diverges included, so the masked path runs too),
MLP and CNN.
"""

from __future__ import annotations

import copy

import pytest
import torch

import pipeline.module
from pipeline.cell import run_cell
from pipeline.module import NormLabModule
from pipeline.records import FILES
from tests.conftest import BASE, make_cell


class ReferenceModule(NormLabModule):
    def _make_xhat_hook(self, layer: int):
        def on_xhat(x_hat: torch.Tensor) -> None:
            def grad_hook(g: torch.Tensor) -> None:
                self._gsum[layer] = g.sum(dim=1, keepdim=True)

            x_hat.register_hook(grad_hook)

        return on_xhat

    def on_train_start(self):
        pass  # the fast path's lookups: not used here

    def step(self, x, y, t):
        tr = self.cell.train
        opt = self.optimizers()
        self.model.set_step(t)
        if self.model.uses_population() and t % self.cell.variant.refresh_every == 0:
            self.model.refresh_population(self.x_train.expand(self.model.members, *self.x_train.shape))
        if t % tr.eval_every == 0:
            self._evaluate(t)
        record = t % tr.log_every == 0
        loss, _ = self.member_losses(x, y)
        self._follow_b()  # b's EMA beside the running means (claim 1b's split): not part of issue 11's work
        self.loss_hist[t] = loss.detach()
        loss_ok = torch.isfinite(loss) & (loss < tr.diverge_loss)
        live = self.alive & loss_ok
        opt.zero_grad()
        self.manual_backward(torch.where(live, loss, torch.zeros_like(loss)).sum())
        if record:
            self.records.append((t, self._measure(with_grads=True, step=t)))
        for i, (lin, _) in enumerate(self.model.hidden):
            if lin.bias is not None and lin.bias.grad is not None:
                g = torch.where(live.view(-1, *[1] * (lin.bias.dim() - 1)), lin.bias.grad, 0.0)
                getattr(self, f"gsum_cum_{i}").add_(g)
                getattr(self, f"gabs_cum_{i}").add_(g.flatten(1).norm(dim=1))
                # added after issue 11 (claim 2's drive windows), the same in both paths
                norm = g.flatten(1).norm(dim=1)
                getattr(self, f"gsq_cum_{i}").addcmul_(norm, norm)
                getattr(self, f"drift_pred_{i}").add_(self.lrs.view(-1, *[1] * (g.dim() - 1)) * g)
        self._gsum.clear()
        opt.optimizer.alive = live
        opt.step()
        ok = live
        if record:
            ok = ok & (self._max_abs_param() < tr.diverge_param)
        newly = self.alive & ~ok
        self.diverged_step.copy_(torch.where(newly, t, self.diverged_step))
        self.alive &= ok

    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        if not self.eval_sets:
            return
        m = self.model.members
        rec: dict[str, torch.Tensor] = {}
        x, y = (t.to(self.device) for t in self.eval_sets["train_full"])
        x, y = x.expand(m, *x.shape), y.expand(m, -1)
        probe = self._probe()
        rec["full_loss_train"], rec["full_acc_train"] = self.member_losses(x, y, probe)
        if any(self.has_bias):
            for i, (lin, _) in enumerate(probe.hidden):
                if lin.bias is not None:
                    lin.bias.copy_(getattr(self, f"b0_{i}"))
            rec["b_sensitivity"] = (rec["full_loss_train"] - self.member_losses(x, y, probe)[0]).abs()
        inference = copy.deepcopy(self.model).eval()
        rec["full_loss_eval"], rec["full_acc_eval"] = self.member_losses(x, y, inference)
        xv, yv = (t.to(self.device) for t in self.eval_sets["val"])
        rec["val_loss_eval"], rec["val_acc_eval"] = self.member_losses(
            xv.expand(m, *xv.shape), yv.expand(m, -1), inference
        )
        if self._b_ema:  # added after issue 11 (claim 1b's split), the same in both paths
            rec["full_loss_eval_bema"] = self._loss_eval_bema(inference, x, y)
        self.records.append((step, rec))


# lr 50 diverges within a few steps for most variants: the masked path (some members dead) runs too
SMALL = dict(
    optim={"lrs": [0.05, 50.0], "seeds": [0, 1]},
    train={"steps": 23, "log_every": 3, "eval_every": 7},
    tracking={"log_every": 3},
)
CELLS = [(v, "synthetic", {}) for v in BASE["variants"]] + [
    ("bn", "digits", {}),
    ("center_detached", "digits", {}),
    ("bn", "digits_images", {"model": {"kind": "cnn", "depth": 2, "channels": 4}}),
    ("population_detached", "digits_images", {"model": {"kind": "cnn", "depth": 2, "channels": 4}}),
]


@pytest.mark.parametrize("variant, dataset, over", CELLS, ids=[f"{v}-{d}" for v, d, _ in CELLS])
def test_the_fast_path_writes_the_same_bytes(tmp_path, monkeypatch, variant, dataset, over):
    cell = make_cell(variant, dataset, **{**SMALL, **over})
    monkeypatch.setattr(pipeline.module, "STEPS_PER_BATCH", 5)
    run_cell(cell, tmp_path / "fast", track=False, progress=False)
    monkeypatch.setattr(pipeline.module, "NormLabModule", ReferenceModule)
    monkeypatch.setattr(pipeline.module, "STEPS_PER_BATCH", 1)
    run_cell(cell, tmp_path / "reference", track=False, progress=False)
    for name in FILES:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_the_default_chunking_writes_the_same_bytes(tmp_path, monkeypatch):
    """The default STEPS_PER_BATCH, over more steps than one batch holds, against one step per batch."""
    cell = make_cell(
        "center_detached", **{**SMALL, "train": {**SMALL["train"], "steps": 2 * pipeline.module.STEPS_PER_BATCH + 3}}
    )
    run_cell(cell, tmp_path / "chunked", track=False, progress=False)
    monkeypatch.setattr(pipeline.module, "STEPS_PER_BATCH", 1)
    run_cell(cell, tmp_path / "per_step", track=False, progress=False)
    for name in FILES:
        assert (tmp_path / "chunked" / name).read_bytes() == (tmp_path / "per_step" / name).read_bytes(), name


def test_the_reference_is_what_runs_when_patched(tmp_path, monkeypatch):
    """The comparison above is not the fast path against itself."""
    calls = []
    monkeypatch.setattr(ReferenceModule, "_evaluate", lambda self, step: calls.append(step))
    monkeypatch.setattr(pipeline.module, "NormLabModule", ReferenceModule)
    run_cell(make_cell("bn", **SMALL), tmp_path / "c", track=False, progress=False)
    assert calls[:4] == [0, 7, 14, 21]


def test_a_chunk_of_steps_holds_the_same_batches_and_is_bounded_in_bytes():
    from pipeline.data.sets import CHUNK_BYTES, StackedBatches, StepChunks

    x, y = torch.randn(300, 5), torch.randint(0, 3, (300,))
    batches = StackedBatches(x, y, [0, 1, 2], 16, 40)
    per_step = list(batches)
    chunks = list(StepChunks(batches, 7))
    assert [t0 for _, _, t0 in chunks] == list(range(0, 40, 7)) and len(StepChunks(batches, 7)) == 6
    flat = [(xs[k], ys[k]) for xs, ys, _ in chunks for k in range(len(xs))]
    assert len(flat) == 40
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(per_step, flat))
    big = StackedBatches(torch.zeros(200, 3, 32, 32), y[:200], list(range(25)), 128, 10)  # ~39 MiB a step
    assert StepChunks(big, 25).chunk == max(1, CHUNK_BYTES // (25 * 128 * 3 * 32 * 32 * 4)) == 1
