"""The naive baseline of benchmarks/run.py: one run of the grid, written the way a user would
without normlab (one process per run, a plain LightningModule, MLFlowLogger).

    python benchmarks/naive_run.py --lr 0.1 --seed 0 --steps 500 --width 32 \
        --tracking-uri sqlite:////tmp/x/mlflow.db [--norm bn|none] [--depth 3]

Model: `depth` hidden layers Linear(+b) -> torch.nn.BatchNorm1d -> ReLU (`--norm bn`, the
plain-torch equivalent of normlab's `bn` variant) or Linear(+b) -> ReLU (`--norm none`, normlab's
`none`), then a Linear output layer; SGD with the given lr on scikit-learn's digits (pixels/16,
as normlab's `digits`), batch 64. Five metrics are logged every step with `self.log` in
training_step (Trainer(log_every_n_steps=1)), so MLFlowLogger sends them every step.

Deliberately generous to the baseline: no progress bar, no model summary, no checkpoints and no
validation loop (normlab evaluates every train.eval_every steps and records far more).
Only the standard library is imported before argument parsing, so `--help` is instant.
"""

from __future__ import annotations

import argparse


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--norm", choices=("bn", "none"), default="bn")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()

    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from pytorch_lightning.loggers import MLFlowLogger
    from sklearn.datasets import load_digits
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    class MLP(pl.LightningModule):
        def __init__(self, d_in: int, d_out: int, width: int, depth: int, norm: str, lr: float):
            super().__init__()
            self.save_hyperparameters()
            layers, d = [], d_in
            for _ in range(depth):
                layers.append(nn.Linear(d, width))
                if norm == "bn":
                    layers.append(nn.BatchNorm1d(width))
                layers.append(nn.ReLU())
                d = width
            layers.append(nn.Linear(d, d_out))
            self.net = nn.Sequential(*layers)
            self.lr = lr

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            first = self.net[0]
            self.log("train_loss", loss)
            self.log("train_acc", (logits.argmax(1) == y).float().mean())
            self.log("w_norm", first.weight.detach().norm())
            self.log("b_norm", first.bias.detach().norm())
            self.log("logit_norm", logits.detach().norm(dim=1).mean())
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    x, y = load_digits(return_X_y=True)
    data = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    model = MLP(x.shape[1], int(y.max()) + 1, args.width, args.depth, args.norm, args.lr)
    logger = MLFlowLogger(
        experiment_name="naive", run_name=f"{args.norm} lr={args.lr} seed={args.seed}", tracking_uri=args.tracking_uri
    )
    trainer = pl.Trainer(
        max_steps=args.steps,
        max_epochs=-1,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
