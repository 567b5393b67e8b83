"""The LightningModule: trains a stack of members and measures the quantities of docs/science.md.

Row t of the history describes the state theta_t: loss(theta_t), its gradients, and the
parameter norms before update t. Everything is kept on the device as tensors and only
moved to the CPU when the tracker flushes, so measuring costs no per-step sync.

Per-step cost (issue 11): a step does what the bare stacked loop does (forward, loss, backward,
stacked step) plus the bias drive sums; the gradient hooks of x_hat run only on recorded steps,
backward and the optimizer step are called directly (no Lightning wrapper per step: its hooks
are unused here), and an all-alive stack skips the masking. Every recorded number is the same
float operation as before, so a cell's outputs are bit-identical (tests/test_module_identity.py).
A variant whose running means are EMAs from 0 and that has b also follows b's EMA (one lerp per
hidden layer a step) and runs the full set once more per evaluation: claim 1b's gap split
(full_loss_eval_bema, docs/science.md).
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from pipeline.config import CellSettings
from pipeline.nets.mlp import StackedMLP
from pipeline.nets.optim import make_optimizer
from pipeline.spec.records import layer_column

# optimizer steps per Lightning batch: its per-batch loop machinery (~0.5 ms a call) is paid once per
# this many steps; any value gives the same bytes (tests/test_module_identity.py)
STEPS_PER_BATCH = 25


class NormLabModule(pl.LightningModule):
    def __init__(
        self,
        model: StackedMLP,
        cell: CellSettings,
        lrs: list[float],
        input_mean: torch.Tensor | None = None,
        x_train: torch.Tensor | None = None,
        eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False  # the step needs the alive mask and pre-step grads
        self.model, self.cell = model, cell
        m, steps = model.members, cell.train.steps
        self.register_buffer("lrs", torch.tensor(lrs, dtype=torch.float32))
        self.register_buffer("alive", torch.ones(m, dtype=torch.bool))
        self.register_buffer("diverged_step", torch.full((m,), -1, dtype=torch.long))
        self.register_buffer("loss_hist", torch.full((steps, m), float("nan")))
        mean = input_mean.flatten() if input_mean is not None else torch.zeros(1)
        self.register_buffer("mean_dir", mean / mean.norm().clamp_min(1e-12))
        # m^T W_0 of a dense first layer (W along the input-mean direction at init): its drift
        # ||m^T (W_t - W_0)|| is claim 4's mechanism (pipeline/claims/mechanism.py); empty otherwise
        w0 = model.hidden[0][0].weight.detach() if model.hidden else None
        dense = w0 is not None and w0.dim() == 3 and w0.shape[1] == self.mean_dir.numel()
        self.register_buffer(
            "mean_dir_W0", torch.einsum("d,mdf->mf", self.mean_dir, w0).clone() if dense else torch.zeros(0)
        )
        self.register_buffer("x_train", x_train if x_train is not None else torch.zeros(0))
        self.eval_sets = eval_sets or {}  # "train_full", "val" -> (x, y): the interval evaluations
        self.has_bias = [lin.bias is not None for lin, _ in model.hidden]
        for i, (lin, norm) in enumerate(model.hidden):
            # b's shape is the layer's own ([M, 1, F] for a Linear, one scalar per channel for a conv)
            b0 = lin.bias.detach().clone() if lin.bias is not None else torch.zeros(m, 1, norm.features)
            self.register_buffer(f"b0_{i}", b0)
            # sum_t G_t and sum_t ||G_t|| with G_t = dl/db_t: b's drive and how persistent it is;
            # drift_pred = lr * sum_t G_t is SGD's own update rule (an identity check, not a prediction)
            self.register_buffer(f"gsum_cum_{i}", torch.zeros_like(b0))
            self.register_buffer(f"gabs_cum_{i}", torch.zeros(m))
            # sum_t ||G_t||^2: with the window sums below, the unbiased split of a window's drive into its
            # mean ||Gbar||^2 and the mini-batch noise (pipeline.drive.window_moments); one fused multiply-add
            # on [M] per layer and step
            self.register_buffer(f"gsq_cum_{i}", torch.zeros(m))
            self.register_buffer(f"drift_pred_{i}", torch.zeros_like(b0))
            norm.on_xhat = self._make_xhat_hook(i)
        self.records: list[tuple[int, dict[str, torch.Tensor]]] = []  # (step, name -> [M])
        self._gsum: dict[int, torch.Tensor] = {}
        # sum_{s<t} G_s at the record steps still needed (per layer with b): the window sums of claim 2's drive
        # (drive_win: since the last record; drive_half: since pipeline.drive.half_start(t)) are differences of
        # these -- a copy per record step, nothing per step
        self._cum_at: dict[int, dict[int, torch.Tensor]] = {i: {} for i, has in enumerate(self.has_bias) if has}
        self._recording = False  # the x_hat gradient hooks run only on recorded steps
        self._final_recorded = False
        self.steps_done = 0  # optimizer steps taken (the tracker flushes by it)
        # per-step constants, looked up once (model.hidden builds a list on every call)
        self._hidden = model.hidden
        self._population = model.uses_population()
        # the spec's mode_free: training- and inference-mode passes are the same float operations, so an
        # interval evaluation runs the full set once for both (a layer without a registered row: two passes)
        self._mode_free = all(n.spec is not None and n.spec.mode_free for _, n in self._hidden)
        # claim 1b's inference-mode gap, split: where every layer with b keeps a running mean that is an EMA
        # from 0 of its batch means (norm.ema_mean_from_zero), that mean is EMA(mean(W u)) + EMA(b) exactly
        # (b is constant over the batch). b_ema_<i> follows EMA(b) with the norm's momentum at the same
        # forwards, so an inference-mode pass with b -> b_ema has b's own lag removed and what is left of
        # the gap is the lag of W's statistics. Elsewhere (mode-free, no b, EMAs that copy their first
        # batch) nothing is tracked and full_loss_eval_bema is not recorded (NaN in the summary).
        with_b = [i for i, has in enumerate(self.has_bias) if has]
        follows = all(getattr(self._hidden[i][1], "ema_mean_from_zero", False) for i in with_b)
        self._b_ema = with_b if with_b and follows and not self._mode_free else []
        for i in self._b_ema:
            self.register_buffer(f"b_ema_{i}", torch.zeros_like(getattr(self, f"b0_{i}")))
        # b shadows beta: where b's gradient is gamma / sigma times beta's (_shadow_gain), shadow_cum_<i> sums
        # gamma_t / sigma_t * (beta_{t+1} - beta_t) over the steps: b_t - b_0 exactly under plain SGD (an
        # identity), not under momentum, Adam or weight decay; a few elementwise ops a step for these layers only
        self._shadow = [i for i, (lin, norm) in enumerate(model.hidden) if self._shadow_gain(lin, norm) is not None]
        for i in self._shadow:
            self.register_buffer(f"shadow_cum_{i}", torch.zeros_like(getattr(self, f"b0_{i}")))

    # -- the mean gradient sum_i dl/dx_hat_i that drives b (docs/science.md) --------------
    def _make_xhat_hook(self, layer: int):
        def on_xhat(x_hat: torch.Tensor) -> None:
            if not self._recording:  # only _measure reads it, on recorded steps
                return

            def grad_hook(g: torch.Tensor) -> None:
                self._gsum[layer] = g.sum(dim=1, keepdim=True)

            x_hat.register_hook(grad_hook)

        return on_xhat

    def configure_optimizers(self):
        o = self.cell.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        return make_optimizer(o.name, params, self.lrs, momentum=o.momentum, weight_decay=o.weight_decay, betas=o.betas)

    def member_losses(
        self, x: torch.Tensor, y: torch.Tensor, model=None, with_acc: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-member mean cross-entropy and accuracy, [M] each (accuracy None without `with_acc`)."""
        logits = (model or self.model)(x)
        m, b, c = logits.shape
        loss = F.cross_entropy(logits.reshape(m * b, c), y.reshape(m * b), reduction="none").view(m, b).mean(1)
        acc = (logits.argmax(-1) == y).float().mean(1) if with_acc else None
        return loss, acc

    def on_train_start(self):
        """Per-step lookups, after Lightning moved the module to its device (buffers are replaced then)."""
        self._opt = self.optimizers(use_pl_optimizer=False)
        # per hidden layer with b: (bias, gsum_cum, gabs_cum, gsq_cum, drift_pred, lr per member)
        self._drive = []
        for i, (lin, _) in enumerate(self._hidden):
            if lin.bias is not None:
                self._drive.append(
                    (
                        lin.bias,
                        getattr(self, f"gsum_cum_{i}"),
                        getattr(self, f"gabs_cum_{i}"),
                        getattr(self, f"gsq_cum_{i}"),
                        getattr(self, f"drift_pred_{i}"),
                        self.lrs.view(-1, *[1] * (lin.bias.dim() - 1)),
                    )
                )

    def training_step(self, batch, batch_idx):
        """A batch is STEPS_PER_BATCH consecutive steps (pipeline.data.sets.StepChunks): xs[k] is step t0 + k's."""
        xs, ys, t0 = batch
        for k in range(len(xs)):
            self.step(xs[k], ys[k], t0 + k)
            self.steps_done = t0 + k + 1

    def step(self, x: torch.Tensor, y: torch.Tensor, t: int) -> None:
        """Optimizer step t on the batch (x, y) of every member."""
        tr = self.cell.train
        opt = self._opt
        self.model.set_step(t)
        if self._population and t % self.cell.variant.refresh_every == 0:
            self.model.refresh_population(self.x_train.expand(self.model.members, *self.x_train.shape))
        if t % tr.eval_every == 0:  # the state theta_t, before update t (t = 0: the initialization)
            self._evaluate(t)
        record = t % tr.log_every == 0
        self._recording = record
        loss, _ = self.member_losses(x, y, with_acc=False)
        self._follow_b()  # the forward just moved every running mean: b's EMA moves with it
        self.loss_hist[t] = loss.detach()
        live = self.alive & torch.isfinite(loss) & (loss < tr.diverge_loss)
        all_live = bool(live.all())  # a CPU tensor: no device sync; on a GPU, one per step
        opt.zero_grad()
        # the gradient of sum(where(live, loss, 0)) is the mask itself: with every member live, sum(loss)'s
        # backward is the same float operations (backward and step called directly: Lightning's
        # manual_backward / LightningOptimizer.step only add hooks this module does not use)
        (loss if all_live else torch.where(live, loss, torch.zeros_like(loss))).sum().backward()
        if record:
            self.records.append((t, self._measure(with_grads=True, step=t)))
        self._recording = False
        for bias, gsum_cum, gabs_cum, gsq_cum, drift_pred, lr in self._drive:
            if bias.grad is not None:
                g = bias.grad if all_live else torch.where(live.view(-1, *[1] * (bias.dim() - 1)), bias.grad, 0.0)
                gsum_cum.add_(g)
                norm = g.flatten(1).norm(dim=1)
                gabs_cum.add_(norm)
                gsq_cum.addcmul_(norm, norm)
                drift_pred.add_(lr * g)
        self._gsum.clear()
        opt.alive = live
        shadow = [
            (i, self._shadow_gain(*self._hidden[i]), self._hidden[i][1].beta.detach().clone()) for i in self._shadow
        ]
        opt.step()
        for i, gain, beta in shadow:  # b's step is gain times beta's step (exact under plain SGD)
            getattr(self, f"shadow_cum_{i}").add_(gain * (self._hidden[i][1].beta.detach() - beta))
        ok = live
        if record:  # parameters are checked at log steps; a NaN/inf one shows in the next loss anyway
            ok = ok & (self._max_abs_param() < tr.diverge_param)  # NaN and inf compare False
        if not (all_live and (not record or bool(ok.all()))):  # else nobody diverged at t: nothing changes
            newly = self.alive & ~ok
            self.diverged_step.copy_(torch.where(newly, t, self.diverged_step))
            self.alive &= ok

    @torch.no_grad()
    def _follow_b(self) -> None:
        """b_ema_<i> <- lerp(b_ema_<i>, b_t, momentum): the norm's own running-mean update, applied to
        the b this training-mode forward used. Called right after every training-mode forward of
        self.model (the only forward that moves its running means: evaluations run on copies)."""
        for i in self._b_ema:
            lin, norm = self._hidden[i]
            getattr(self, f"b_ema_{i}").lerp_(lin.bias.detach(), norm.momentum)

    def _max_abs_param(self) -> torch.Tensor:
        return torch.stack([p.detach().abs().flatten(1).amax(1) for p in self.model.parameters()]).amax(0)

    @torch.no_grad()
    def _drive_windows(self, i: int, step: int, out: dict[str, torch.Tensor]) -> None:
        """Layer i's drive over the windows ending at `step` (a record step, or the end): the mean G per step
        since the previous record (drive_win) and since pipeline.drive.half_start(step) (drive_half: the
        doubling window whose decay decides claim 2), and sum_t ||G_t||^2 so far (gsq_cum). gsum_cum holds
        sum_{s<step} G_s here (the step's own gradient is added after it is recorded)."""
        from pipeline.drive import half_start

        cum, kept = getattr(self, f"gsum_cum_{i}"), self._cum_at[i]
        out[layer_column("gsq_cum", i)] = getattr(self, f"gsq_cum_{i}").clone()
        if kept and step > max(kept):
            prev, half = max(kept), half_start(step, self.cell.train.log_every)
            out[layer_column("drive_win", i)] = (cum - kept[prev]).flatten(1).norm(dim=1) / (step - prev)
            out[layer_column("drive_half", i)] = (cum - kept[half]).flatten(1).norm(dim=1) / (step - half)
        kept[step] = cum.clone()
        # a later step s > step opens its doubling window at half_start(s) >= half_start(step): older copies go
        for old in [k for k in kept if k < half_start(step, self.cell.train.log_every)]:
            del kept[old]

    @torch.no_grad()
    def _measure(self, with_grads: bool, step: int) -> dict[str, torch.Tensor]:
        """Per-member norms of every hidden layer (and its gradients when `with_grads`) at `step`."""
        out: dict[str, torch.Tensor] = {}
        sq = torch.zeros_like(self.lrs)
        for i, (lin, norm) in enumerate(self.model.hidden):
            w = lin.weight
            out[layer_column("W_norm", i)] = w.flatten(1).norm(dim=1)
            if lin.bias is not None:
                out[layer_column("b_norm", i)] = lin.bias.flatten(1).norm(dim=1)
                out[layer_column("b_drift", i)] = (lin.bias - getattr(self, f"b0_{i}")).flatten(1).norm(dim=1)
                out[layer_column("b_drift_pred", i)] = getattr(self, f"drift_pred_{i}").flatten(1).norm(dim=1)
                out[layer_column("gsum_cum", i)] = getattr(self, f"gsum_cum_{i}").flatten(1).norm(dim=1)
                out[layer_column("gabs_cum", i)] = getattr(self, f"gabs_cum_{i}").clone()
                self._drive_windows(i, step, out)
            if i in self._b_ema:  # ||b_t - EMA(b)||: the lag the running mean holds of b (claim 1b's prediction)
                out[layer_column("b_lag", i)] = (lin.bias - getattr(self, f"b_ema_{i}")).flatten(1).norm(dim=1)
            if norm.affine:
                out[layer_column("gamma_norm", i)] = norm.gamma.flatten(1).norm(dim=1)
                out[layer_column("beta_norm", i)] = norm.beta.flatten(1).norm(dim=1)
                shadow = self._shadow_prediction(lin, norm)
                if shadow is not None:
                    out[layer_column("shadow_pred", i)] = shadow
            if i in self._shadow:
                out[layer_column("shadow_cum", i)] = getattr(self, f"shadow_cum_{i}").flatten(1).norm(dim=1)
            if i == 0 and w.dim() == 3:  # W along the input-mean direction: ||m_hat^T W|| (dense first layer)
                along = torch.einsum("d,mdf->mf", self.mean_dir, w)
                out[layer_column("mean_dir_W", 0)] = along.norm(dim=1)
                if self.mean_dir_W0.numel():  # ... and its drift since init, ||m_hat^T (W_t - W_0)||: one [M, F]
                    out[layer_column("mean_dir_drift", 0)] = (along - self.mean_dir_W0).norm(dim=1)  # norm a log step
            if not with_grads:
                continue
            if w.grad is not None:
                out[layer_column("grad_W", i)] = w.grad.flatten(1).norm(dim=1)
                out[layer_column("radial", i)] = (w * w.grad).flatten(1).sum(1) / out[
                    layer_column("W_norm", i)
                ].clamp_min(1e-30)
            if lin.bias is not None and lin.bias.grad is not None:
                out[layer_column("grad_b", i)] = lin.bias.grad.flatten(1).norm(dim=1)
            if i in self._gsum:
                out[layer_column("gsum", i)] = self._gsum[i].flatten(1).norm(dim=1)
        if with_grads:
            for p in self.model.parameters():
                if p.grad is not None:
                    sq = sq + p.grad.flatten(1).pow(2).sum(1)
            out["grad_norm"] = sq.sqrt()
        return out

    @staticmethod
    @torch.no_grad()
    def _shadow_gain(lin, norm) -> torch.Tensor | None:
        """gamma / sigma per unit, a new tensor (sigma = 1 for a centering; for a scaling layer the sigma its
        last training forward used): b's gradient over beta's. With statistics detached from the step,
        dl/db = gamma / sigma * dl/dbeta per unit, so under plain SGD b_{t+1} - b_t = gamma_t / sigma_t *
        (beta_{t+1} - beta_t) exactly: b shadows beta (docs/science.md). None where that does not hold: no b,
        no gamma, beta, either of them frozen, statistics the gradient goes through (b's gradient is 0
        there), or a scaling layer without a sigma (shift_sigma)."""
        spec = norm.spec
        if (
            lin.bias is None
            or not norm.affine
            or spec is None
            or not spec.detached
            or not (lin.bias.requires_grad and norm.beta.requires_grad)
        ):
            return None
        if not spec.scales:
            return norm.gamma.detach().clone()
        return norm.gamma.detach() / norm.shift_sigma() if hasattr(norm, "shift_sigma") else None

    @classmethod
    def _shadow_prediction(cls, lin, norm) -> torch.Tensor | None:
        """||gamma_t beta_t / sigma_t|| per member: b's drift b_t - b_0 if gamma and sigma had stood still
        (beta starts at 0); the exact sum is shadow_cum (None: see _shadow_gain)."""
        gain = cls._shadow_gain(lin, norm)
        return None if gain is None else (gain * norm.beta.detach()).flatten(1).norm(dim=1)

    # -- interval evaluations on the full sets, on copies (no EMA or other state moves) ------
    @torch.no_grad()
    def _evaluate(self, step: int) -> None:
        """Full training set in training mode (batch statistics over the whole set: the
        normalization the gradient step sees) and in inference mode (running or population
        statistics, torch's eval()); validation set in inference mode. Every name says its mode."""
        if not self.eval_sets:
            return
        m = self.model.members
        rec: dict[str, torch.Tensor] = {}
        x, y = (t.to(self.device) for t in self.eval_sets["train_full"])
        x, y = x.expand(m, *x.shape), y.expand(m, -1)
        probe = self._probe()
        rec["full_loss_train"], rec["full_acc_train"] = self.member_losses(x, y, probe)
        if any(self.has_bias):  # claim 1's identity check: the same loss with every b reset to b_0
            for i, (lin, _) in enumerate(probe.hidden):
                if lin.bias is not None:
                    lin.bias.copy_(getattr(self, f"b0_{i}"))
            rec["b_sensitivity"] = (rec["full_loss_train"] - self.member_losses(x, y, probe)[0]).abs()
        inference = copy.deepcopy(self.model).eval()
        if self._mode_free:  # the same float operations as the training-mode pass above: reuse it
            rec["full_loss_eval"], rec["full_acc_eval"] = rec["full_loss_train"], rec["full_acc_train"]
        else:
            rec["full_loss_eval"], rec["full_acc_eval"] = self.member_losses(x, y, inference)
        xv, yv = (t.to(self.device) for t in self.eval_sets["val"])
        rec["val_loss_eval"], rec["val_acc_eval"] = self.member_losses(
            xv.expand(m, *xv.shape), yv.expand(m, -1), inference
        )
        if self._b_ema:
            rec["full_loss_eval_bema"] = self._loss_eval_bema(inference, x, y)
        self.records.append((step, rec))

    @torch.no_grad()
    def _loss_eval_bema(self, inference, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inference-mode full-set loss with every b replaced by b_ema (b's lag removed): one more
        forward of the full set. Changes `inference`'s biases (a throw-away copy: call it last).
        full_loss_eval - this = b's share of the inference-mode gap; this - full_loss_train = the
        share of the lag of W's statistics (they sum to the gap by construction)."""
        hidden = inference.hidden
        for i in self._b_ema:
            hidden[i][0].bias.copy_(getattr(self, f"b_ema_{i}"))
        return self.member_losses(x, y, inference, with_acc=False)[0]

    def _probe(self):
        """A training-mode copy of the model, without the gradient hooks."""
        probe = copy.deepcopy(self.model).train()
        for _, norm in probe.hidden:
            norm.on_xhat = None
        return probe

    def _grad_ratio_float64(self) -> dict[str, torch.Tensor]:
        """Claim 5's identity in float64: |dl/db| / |dl/dW| per member and hidden layer with b, on the training
        set's first batch in training mode, the model and batch cast to float64. Float64 rounds at ~1e-16 times
        the summed terms, so an exact zero of dl/db stays below ~1e-10 however many batch x H x W terms a
        channel sums (float32's logged ratio reaches ~1e-4 in a conv net: rounding, not b's role)."""
        if not self.eval_sets or not any(lin.bias is not None for lin, _ in self._hidden):
            return {}
        x, y = (t.to(self.device) for t in self.eval_sets["train_full"])
        n, m = self.cell.optim.batch_size, self.model.members
        x, y = x[:n].double(), y[:n]
        probe = self._probe().double()
        with torch.enable_grad():
            self.member_losses(x.expand(m, *x.shape), y.expand(m, -1), probe, with_acc=False)[0].sum().backward()
        out = {}
        for i, (lin, _) in enumerate(probe.hidden):
            if lin.bias is not None and lin.bias.grad is not None and lin.weight.grad is not None:
                gw = lin.weight.grad.flatten(1).norm(dim=1)
                out[layer_column("grad_b_rel64", i)] = (lin.bias.grad.flatten(1).norm(dim=1) / gw).float()
        return out

    def on_train_end(self):
        """Norms of the final state theta_T (idempotent: the tracker may call it first); claim 5's float64
        gradient identity on it."""
        if not self._final_recorded:
            final = self._measure(with_grads=False, step=self.cell.train.steps)
            final.update(self._grad_ratio_float64())
            self.records.append((self.cell.train.steps, final))
            self._evaluate(self.cell.train.steps)
            self._final_recorded = True
