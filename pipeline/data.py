"""Data sets as LightningDataModules that yield stacked batches [members, batch, features].

`synthetic`: Gaussian classes around a shared input mean m with ||m|| = input_mean
(0 gives the zero-mean control, where the rank-1 gradient term of SCIENCE.md item 5
vanishes). `digits`: scikit-learn's bundled 8x8 digits (no download). `csv`: a user's file.
Each member draws its own data order from its own seed, so a member sees the same
batches whether it trains in a stack or alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from pipeline.config import REPO_ROOT, DatasetSettings


def load_arrays(cfg: DatasetSettings) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] and integer labels [N] (before any split)."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind == "synthetic":
        direction = rng.standard_normal(cfg.dim)
        mean = cfg.input_mean * direction / np.linalg.norm(direction)
        centres = rng.standard_normal((cfg.classes, cfg.dim)) * cfg.class_sep
        y = rng.integers(0, cfg.classes, cfg.samples)
        x = centres[y] + rng.standard_normal((cfg.samples, cfg.dim))
        x = x - x.mean(0) + mean  # the sample mean is exactly m: input_mean 0 is a true control
    elif cfg.kind == "digits":
        from sklearn.datasets import load_digits  # ships with scikit-learn

        x, y = load_digits(return_X_y=True)
        x = x / 16.0  # pixel intensities in [0, 1]: a real set with non-zero input mean
    else:
        import pandas as pd

        path = Path(cfg.path) if Path(cfg.path).exists() else REPO_ROOT / cfg.path
        frame = pd.read_csv(path)
        if cfg.target not in frame:
            raise ValueError(f"{cfg.path}: no column {cfg.target!r} (columns: {', '.join(frame.columns)})")
        y = frame.pop(cfg.target).astype("category").cat.codes.to_numpy()
        x = frame.to_numpy(dtype=np.float64)
    return x.astype(np.float32), np.asarray(y, dtype=np.int64)


class StackedBatches(IterableDataset):
    """`steps` batches; member m's order is a fresh permutation per epoch from seed m."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seeds: list[int], batch_size: int, steps: int):
        self.x, self.y, self.seeds, self.batch_size, self.steps = x, y, seeds, batch_size, steps

    def __len__(self):
        return self.steps

    def member_indices(self, seed: int) -> torch.Tensor:
        """[steps, batch] indices of one member; drops each epoch's incomplete last batch."""
        n, b = len(self.x), min(self.batch_size, len(self.x))
        per_epoch = n // b
        gen = torch.Generator().manual_seed(10_007 + int(seed))  # data order apart from init
        epochs = -(-self.steps // per_epoch)
        perms = [torch.randperm(n, generator=gen)[: per_epoch * b].view(per_epoch, b) for _ in range(epochs)]
        return torch.cat(perms)[: self.steps]

    def __iter__(self):
        idx = torch.stack([self.member_indices(s) for s in self.seeds], dim=1)  # [steps, M, B]
        for t in range(self.steps):
            yield self.x[idx[t]], self.y[idx[t]]


class StackedDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DatasetSettings, seeds: list[int], batch_size: int, steps: int):
        super().__init__()
        self.cfg, self.seeds, self.batch_size, self.steps = cfg, seeds, batch_size, steps
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        x, y = load_arrays(self.cfg)
        order = np.random.default_rng(self.cfg.seed + 1).permutation(len(x))  # split fixed by seed
        n_val = max(1, int(round(self.cfg.val_fraction * len(x))))
        val, train = order[:n_val], order[n_val:]
        if self.cfg.kind != "synthetic" and self.cfg.standardize:
            mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
            x = (x - mu) / sd
        self.x_train, self.y_train = torch.from_numpy(x[train]), torch.from_numpy(y[train])
        self.x_val, self.y_val = torch.from_numpy(x[val]), torch.from_numpy(y[val])
        self.num_classes = int(y.max()) + 1
        self.input_mean = self.x_train.mean(0)  # the direction m of SCIENCE.md item 5
        self._ready = True

    @property
    def dims(self) -> tuple[int, int]:
        self.setup()
        return self.x_train.shape[1], self.num_classes

    def train_dataloader(self):
        data = StackedBatches(self.x_train, self.y_train, self.seeds, self.batch_size, self.steps)
        return DataLoader(data, batch_size=None)

    def val_dataloader(self):
        """Two loaders of one full-set batch each: the whole train set, then validation."""
        return [DataLoader([(x, y)], batch_size=None) for x, y in self.full_sets().values()]

    def full_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Whole train and validation sets, for the interval evaluations."""
        return {"train_full": (self.x_train, self.y_train), "val": (self.x_val, self.y_val)}
