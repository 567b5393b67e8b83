"""The LightningModule: trains a stack of members and measures the SCIENCE.md quantities.

Row t of the history describes the state theta_t: loss(theta_t), its gradients, and the
parameter norms before update t. Everything is kept on the device as tensors and only
moved to the CPU when the tracker flushes, so measuring costs no per-step sync.
"""
from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from pipeline.config import CellSettings
from pipeline.model import StackedMLP
from pipeline.optim import make_optimizer


class NormLabModule(pl.LightningModule):
    def __init__(self, model: StackedMLP, cell: CellSettings, lrs: list[float],
                 input_mean: torch.Tensor | None = None, x_train: torch.Tensor | None = None):
        super().__init__()
        self.automatic_optimization = False  # the step needs the alive mask and pre-step grads
        self.model, self.cell = model, cell
        m, steps = model.members, cell.train.steps
        self.register_buffer("lrs", torch.tensor(lrs, dtype=torch.float32))
        self.register_buffer("alive", torch.ones(m, dtype=torch.bool))
        self.register_buffer("diverged_step", torch.full((m,), -1, dtype=torch.long))
        self.register_buffer("loss_hist", torch.full((steps, m), float("nan")))
        mean = input_mean if input_mean is not None else torch.zeros(model.linears[0].weight.shape[1])
        self.register_buffer("mean_dir", mean / mean.norm().clamp_min(1e-12))
        self.register_buffer("x_train", x_train if x_train is not None else torch.zeros(0))
        self.has_bias = [lin.bias is not None for lin, _ in model.hidden]
        for i, (lin, norm) in enumerate(model.hidden):
            b0 = lin.bias.detach().clone() if lin.bias is not None else torch.zeros(m, 1, norm.features)
            self.register_buffer(f"b0_{i}", b0)
            self.register_buffer(f"drift_pred_{i}", torch.zeros(m, 1, norm.features))
            norm.on_xhat = self._make_xhat_hook(i)
        self.records: list[tuple[int, dict[str, torch.Tensor]]] = []  # (step, name -> [M])
        self._gsum: dict[int, torch.Tensor] = {}
        self._final_recorded = False

    # -- the mean gradient sum_i dl/dx_hat_i that drives b (SCIENCE.md item 2) --------------
    def _make_xhat_hook(self, layer: int):
        def on_xhat(x_hat: torch.Tensor) -> None:
            def grad_hook(g: torch.Tensor) -> None:
                self._gsum[layer] = g.sum(dim=1, keepdim=True)
            x_hat.register_hook(grad_hook)
        return on_xhat

    def configure_optimizers(self):
        o = self.cell.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        return make_optimizer(o.name, params, self.lrs, momentum=o.momentum,
                              weight_decay=o.weight_decay, betas=o.betas)

    def member_losses(self, x: torch.Tensor, y: torch.Tensor, model=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean cross-entropy and accuracy, [M] each."""
        logits = (model or self.model)(x)
        m, b, c = logits.shape
        loss = F.cross_entropy(logits.reshape(m * b, c), y.reshape(m * b), reduction="none").view(m, b).mean(1)
        acc = (logits.argmax(-1) == y).float().mean(1)
        return loss, acc

    def training_step(self, batch, batch_idx):
        x, y = batch
        t = batch_idx
        tr = self.cell.train
        opt = self.optimizers()
        if self.model.uses_population() and t % self.cell.variant.refresh_every == 0:
            self.model.refresh_population(self.x_train.expand(self.model.members, -1, -1))
        record = t % tr.log_every == 0
        loss, _ = self.member_losses(x, y)
        self.loss_hist[t] = loss.detach()
        loss_ok = torch.isfinite(loss) & (loss < tr.diverge_loss)
        live = self.alive & loss_ok
        opt.zero_grad()
        self.manual_backward(torch.where(live, loss, torch.zeros_like(loss)).sum())
        if record:
            self.records.append((t, self._measure(with_grads=True)))
        for i in range(len(self.has_bias)):  # predicted displacement of b: eta * sum_t G_t
            if i in self._gsum:
                getattr(self, f"drift_pred_{i}").add_(torch.where(
                    live.view(-1, 1, 1), self.lrs.view(-1, 1, 1) * self._gsum[i], 0.0))
        self._gsum.clear()
        opt.optimizer.alive = live
        opt.step()
        ok = live
        if record:  # parameters are checked at log steps; a NaN/inf one shows in the next loss anyway
            ok = ok & (self._max_abs_param() < tr.diverge_param)  # NaN and inf compare False
        newly = self.alive & ~ok
        self.diverged_step.copy_(torch.where(newly, t, self.diverged_step))
        self.alive &= ok

    def _max_abs_param(self) -> torch.Tensor:
        return torch.stack([p.detach().abs().flatten(1).amax(1) for p in self.model.parameters()]).amax(0)

    @torch.no_grad()
    def _measure(self, with_grads: bool) -> dict[str, torch.Tensor]:
        """Per-member norms of every hidden layer (and its gradients when `with_grads`)."""
        out: dict[str, torch.Tensor] = {}
        sq = torch.zeros_like(self.lrs)
        for i, (lin, norm) in enumerate(self.model.hidden):
            w = lin.weight
            out[f"W_norm/l{i}"] = w.flatten(1).norm(dim=1)
            if lin.bias is not None:
                out[f"b_norm/l{i}"] = lin.bias.flatten(1).norm(dim=1)
                out[f"b_drift/l{i}"] = (lin.bias - getattr(self, f"b0_{i}")).flatten(1).norm(dim=1)
                out[f"b_drift_pred/l{i}"] = getattr(self, f"drift_pred_{i}").flatten(1).norm(dim=1)
            if norm.affine:
                out[f"gamma_norm/l{i}"] = norm.gamma.flatten(1).norm(dim=1)
                out[f"beta_norm/l{i}"] = norm.beta.flatten(1).norm(dim=1)
            if i == 0:  # W along the input-mean direction: ||m_hat^T W||
                out["mean_dir_W/l0"] = torch.einsum("d,mdf->mf", self.mean_dir, w).norm(dim=1)
            if not with_grads:
                continue
            if w.grad is not None:
                out[f"grad_W/l{i}"] = w.grad.flatten(1).norm(dim=1)
                out[f"radial/l{i}"] = (w * w.grad).flatten(1).sum(1) / out[f"W_norm/l{i}"].clamp_min(1e-30)
            if lin.bias is not None and lin.bias.grad is not None:
                out[f"grad_b/l{i}"] = lin.bias.grad.flatten(1).norm(dim=1)
            if i in self._gsum:
                out[f"gsum/l{i}"] = self._gsum[i].flatten(1).norm(dim=1)
        if with_grads:
            for p in self.model.parameters():
                if p.grad is not None:
                    sq = sq + p.grad.flatten(1).pow(2).sum(1)
            out["grad_norm"] = sq.sqrt()
        return out

    # -- interval evaluation through Lightning's validation loop ---------------------------
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        m = self.model.members
        loss, acc = self.member_losses(x.expand(m, -1, -1), y.expand(m, -1))
        name = ("train_full", "val")[dataloader_idx]
        rec = {f"{name}_loss": loss, f"{name}_acc": acc}
        if name == "train_full" and any(self.has_bias):
            rec["b_sensitivity"] = self._bias_sensitivity(x.expand(m, -1, -1), y.expand(m, -1))
        self.records.append((self.global_step, rec))

    @torch.no_grad()
    def _bias_sensitivity(self, x, y) -> torch.Tensor:
        """|loss(theta) - loss(theta with every hidden b reset to b_0)| on the full training
        set, in training mode (the statistics the gradient step sees): claim 1 measured.
        Done on copies, so no EMA or other state of the real model moves."""
        losses = []
        for reset in (False, True):
            probe = copy.deepcopy(self.model).train()
            for i, (lin, norm) in enumerate(probe.hidden):
                norm.on_xhat = None
                if reset and lin.bias is not None:
                    lin.bias.copy_(getattr(self, f"b0_{i}"))
            losses.append(self.member_losses(x, y, probe)[0])
        return (losses[0] - losses[1]).abs()

    def on_train_end(self):
        """Norms of the final state theta_T (idempotent: the tracker may call it first)."""
        if not self._final_recorded:
            self.records.append((self.cell.train.steps, self._measure(with_grads=False)))
            self._final_recorded = True
