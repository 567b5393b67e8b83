"""Data sets as LightningDataModules that yield stacked batches [members, batch, features].

`synthetic`: Gaussian classes around a shared input mean m with ||m|| = input_mean
(0 gives the zero-mean control, where the rank-1 gradient term (docs/science.md)
vanishes). `digits`: scikit-learn's bundled 8x8 digits (no download). `csv`: a user's file:
a header line, numeric feature columns, one `target` column (any labels), no missing values;
`path` is read relative to the working directory, else to the repository (a file anywhere,
inside the repository's data/ or not, is accepted). Images (pipeline/data/images.py):
`digits_images`, `mnist`, `fashion_mnist`, `cifar10` as [C, H, W] examples, batches
[members, batch, C, H, W]; an MLP cell reads them flattened (`flatten=True`).
Each member draws its own data order from its own seed, so a member sees the same
batches whether it trains in a stack or alone.

`preflight(cell)` checks, before any run is created, everything that needs the data or the
machine: the file's contents, the batch against the training split, the accelerator:

    from pipeline.data.sets import preflight
    preflight(cell)   # ConfigError: one line naming the key or file and what is allowed
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from pipeline.config import DOWNLOADED_KINDS, IMAGE_KINDS, REPO_ROOT, CellSettings, ConfigError, DatasetSettings


def _read_csv(cfg: DatasetSettings, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A user's csv as features float [N, D] and label codes [N]; every flaw is one ConfigError line."""
    import pandas as pd

    assert cfg.path is not None  # a csv data set has a path (DatasetSettings checks it)
    path = Path(cfg.path) if Path(cfg.path).exists() else REPO_ROOT / cfg.path
    where = f"{key}.path: {cfg.path}"
    if not path.exists():
        raise ConfigError(f"{where}: file not found")
    if path.is_dir():
        raise ConfigError(f"{where}: is a folder; give a csv file")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{where}: is empty; needs a header line, then one row per example") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{where}: not a readable csv file ({first})") from None
    if cfg.target not in frame:
        raise ConfigError(f"{key}.target: no column {cfg.target!r} in {cfg.path} "
                          f"(columns: {', '.join(map(str, frame.columns))})")
    if len(frame) < 2:
        raise ConfigError(f"{where}: has {len(frame)} data row{'s' * (len(frame) != 1)}; needs at least 2 "
                          f"(one to train on, one to validate)")
    features = [c for c in frame.columns if c != cfg.target]
    if not features:
        raise ConfigError(f"{where}: has no feature column besides the target {cfg.target!r}")
    for col in features:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            bad = pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna()
            row = int(np.argmax(bad.to_numpy())) if bad.any() else 0
            raise ConfigError(f"{where}: column {col!r} is not numeric (line {row + 2}: {frame[col].iloc[row]!r}); "
                              f"feature columns must be numbers")
    for col in frame.columns:
        bad = frame[col].isna().to_numpy()
        if col != cfg.target:
            bad = bad | ~np.isfinite(frame[col].to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.argmax(bad))
            raise ConfigError(f"{where}: column {col!r} has a missing or non-finite value (line {row + 2}); "
                              f"every cell must be a finite number")
    labels = frame.pop(cfg.target)
    if labels.nunique() < 2:  # one class: nothing to classify, the loss is 0 from step 0
        raise ConfigError(f"{where}: column {cfg.target!r} has a single class ({labels.iloc[0]!r}); needs at least 2")
    return frame.to_numpy(dtype=np.float64), labels.astype("category").cat.codes.to_numpy()


def load_arrays(cfg: DatasetSettings, key: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, D] (images: [N, C, H, W], the training set) and integer labels [N]
    (before any split); `key` names the data set in error lines (e.g. "datasets.mine")."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind in IMAGE_KINDS:
        from pipeline.data.images import load_images

        x, y = load_images(cfg, key)
    elif cfg.kind == "synthetic":
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
        x, y = _read_csv(cfg, key)
    if len(np.unique(y)) < 2:
        raise ConfigError(f"{key}: all {len(y)} examples drew one class; add samples or classes")
    return x.astype(np.float32), np.asarray(y, dtype=np.int64)


def split(cfg: DatasetSettings, n: int, key: str = "dataset") -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices, fixed by the data set's seed."""
    order = np.random.default_rng(cfg.seed + 1).permutation(n)
    n_val = max(1, int(round(cfg.val_fraction * n)))
    if n - n_val < 1:
        raise ConfigError(f"{key}.val_fraction: leaves no training example ({n} examples, "
                          f"{n_val} for validation); lower it or add examples")
    return order[n_val:], order[:n_val]


def flip_labels(y: np.ndarray, fraction: float, classes: int, seed: int) -> np.ndarray:
    """A copy of `y` with round(fraction x N) labels, chosen at random (seeded), each replaced by one of the
    other classes drawn uniformly: those examples' gradient never vanishes (label noise)."""
    y = np.array(y, copy=True)
    k = int(round(fraction * len(y)))
    if k == 0:
        return y
    rng = np.random.default_rng([int(seed), 7919])  # apart from the data's and the split's draws
    which = rng.choice(len(y), size=k, replace=False)
    y[which] = (y[which] + rng.integers(1, classes, size=k)) % classes
    return y


def load_split(cfg: DatasetSettings, key: str = "dataset"):
    """(x_train, y_train, x_val, y_val): a seeded val_fraction split, or the official test set
    as validation (`val_from: test`); `label_noise` flips that fraction of the training labels."""
    if cfg.kind in DOWNLOADED_KINDS and cfg.val_from == "test":
        from pipeline.data.images import load_images

        x_tr, y_tr, x_val, y_val = load_images(cfg, key, test=True)
    else:
        x, y = load_arrays(cfg, key)
        train, val = split(cfg, len(x), key)
        x_tr, y_tr, x_val, y_val = x[train], y[train], x[val], y[val]
    if cfg.label_noise:
        classes = int(max(y_tr.max(), y_val.max())) + 1
        y_tr = flip_labels(y_tr, cfg.label_noise, classes, cfg.seed)
    return x_tr, y_tr, x_val, y_val


def check_batch(batch_size: int, n_train: int, key: str = "dataset") -> None:
    # refused, not clamped: config.json must record the batch that was really used
    if batch_size > n_train:
        raise ConfigError(f"optim.batch_size: must be at most the {n_train} examples of {key}'s "
                          f"training split (got {batch_size})")


def check_full_set_memory(cell: CellSettings, n: int, hw: tuple[int, int], key: str) -> None:
    """The interval evaluations run the whole set through every member at once (batch
    statistics over the full set): refuse, before any work, a CNN whose activations for
    that cannot fit this machine's memory (the GPU's when one will be used)."""
    import os

    m = len(cell.members())
    need = 4 * 4 * n * m * cell.model.channels * hw[0] * hw[1]  # ~4 live float32 activations
    if cell.train.accelerator != "cpu" and torch.cuda.is_available():
        have, where = torch.cuda.get_device_properties(0).total_memory, "the GPU's"
    else:
        have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's"
    if need > 0.8 * have:
        fit = max(2, int(n * 0.8 * have / need))
        raise ConfigError(f"{key}.subset: a cnn's full-set evaluations need ~{need / 2**30:.0f} GiB of activations "
                          f"({n} examples x {m} members x {cell.model.channels} channels x {hw[0]}x{hw[1]}), "
                          f"more than {where} {have / 2**30:.0f} GiB; set subset to at most ~{fit}")


def preflight(cell: CellSettings) -> None:
    """Everything about `cell` that needs its data or this machine, checked before any run exists."""
    key = f"datasets.{cell.dataset_name}"
    if cell.model.kind == "cnn" and cell.dataset.kind not in IMAGE_KINDS:
        raise ConfigError(f"model.kind: cnn needs image data ({key}.kind one of {', '.join(IMAGE_KINDS)}); "
                          f"{cell.dataset_name} is {cell.dataset.kind}")
    x_train, _, x_val, _ = load_split(cell.dataset, key)
    check_batch(cell.optim.batch_size, len(x_train), key)
    if cell.model.kind == "cnn":
        check_full_set_memory(cell, max(len(x_train), len(x_val)), x_train.shape[-2:], key)
    acc = cell.train.accelerator
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator: {acc} needs a CUDA GPU, and torch sees none on this machine "
                          f"(torch {torch.__version__}); use auto or cpu")
    if acc == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.accelerator: mps needs Apple's Metal GPU, and torch sees none on this machine; "
                          "use auto or cpu")


class StackedBatches(IterableDataset):
    """`steps` batches; member m's order is a fresh permutation per epoch from seed m."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seeds: list[int], batch_size: int, steps: int):
        self.x, self.y, self.seeds, self.batch_size, self.steps = x, y, seeds, batch_size, steps

    def __len__(self):
        return self.steps

    def member_indices(self, seed: int) -> torch.Tensor:
        """[steps, batch] indices of one member; drops each epoch's incomplete last batch."""
        n, b = len(self.x), self.batch_size
        check_batch(b, n)  # never clamped silently (preflight names the data set first)
        per_epoch = n // b
        gen = torch.Generator().manual_seed(10_007 + int(seed))  # data order apart from init
        epochs = -(-self.steps // per_epoch)
        perms = [torch.randperm(n, generator=gen)[: per_epoch * b].view(per_epoch, b) for _ in range(epochs)]
        return torch.cat(perms)[: self.steps]

    def indices(self) -> torch.Tensor:
        """[steps, M, B]: the examples of every member at every step."""
        return torch.stack([self.member_indices(s) for s in self.seeds], dim=1)

    def __iter__(self):
        idx = self.indices()
        for t in range(self.steps):
            yield self.x[idx[t]], self.y[idx[t]]


CHUNK_BYTES = 64 * 2**20  # a chunk of steps holds at most this much input (CIFAR-size images: a few steps)


class StepChunks(IterableDataset):
    """The batches of a StackedBatches, `chunk` consecutive steps per item: (xs [K, M, B, ...],
    ys [K, M, B], first step). One Lightning batch then runs K optimizer steps, so Lightning's
    per-batch machinery is paid once per K steps (issue 11); xs[k] is the same data as step t0 + k's."""

    def __init__(self, batches: StackedBatches, chunk: int):
        step_bytes = len(batches.seeds) * batches.batch_size * batches.x[0].numel() * batches.x.element_size()
        self.batches, self.chunk = batches, max(1, min(chunk, CHUNK_BYTES // max(1, step_bytes)))

    def __len__(self):
        return -(-self.batches.steps // self.chunk)

    def __iter__(self):
        idx, b = self.batches.indices(), self.batches
        for t0 in range(0, b.steps, self.chunk):
            sel = idx[t0:t0 + self.chunk]
            yield b.x[sel], b.y[sel], t0


class StackedDataModule(pl.LightningDataModule):
    """`flatten`: images become [N, C*H*W] (an MLP cell); else they stay [N, C, H, W]."""

    def __init__(self, cfg: DatasetSettings, seeds: list[int], batch_size: int, steps: int, key: str = "dataset",
                 flatten: bool = False, chunk: int = 1):
        super().__init__()
        self.cfg, self.seeds, self.batch_size, self.steps, self.key = cfg, seeds, batch_size, steps, key
        self.flatten, self.chunk = flatten, chunk
        self._ready = False

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        x_tr, y_tr, x_val, y_val = load_split(self.cfg, self.key)  # the loader preflight checked
        check_batch(self.batch_size, len(x_tr), self.key)
        if self.cfg.kind != "synthetic" and self.cfg.standardize:
            axes = (0, 2, 3) if x_tr.ndim == 4 else 0  # images: per channel over N x H x W
            mu, sd = x_tr.mean(axes, keepdims=True), x_tr.std(axes, keepdims=True) + 1e-6
            x_tr, x_val = (x_tr - mu) / sd, (x_val - mu) / sd
        if self.flatten:
            x_tr, x_val = x_tr.reshape(len(x_tr), -1), x_val.reshape(len(x_val), -1)
        self.x_train, self.y_train = torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr)
        self.x_val, self.y_val = torch.from_numpy(np.ascontiguousarray(x_val)), torch.from_numpy(y_val)
        self.num_classes = int(max(y_tr.max(), y_val.max())) + 1
        self.input_mean = self.x_train.mean(0)  # the direction m (docs/science.md) (images: [C, H, W])
        self._ready = True

    @property
    def dims(self) -> tuple[int, int]:
        self.setup()
        return self.x_train.shape[1], self.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (D,) or (C, H, W)."""
        self.setup()
        return tuple(self.x_train.shape[1:])

    def train_dataloader(self):
        """Items of `chunk` steps each (StepChunks): (xs, ys, first step)."""
        data = StackedBatches(self.x_train, self.y_train, self.seeds, self.batch_size, self.steps)
        return DataLoader(StepChunks(data, self.chunk), batch_size=None)

    def val_dataloader(self):
        """Two loaders of one full-set batch each: the whole train set, then validation."""
        return [DataLoader([(x, y)], batch_size=None) for x, y in self.full_sets().values()]

    def full_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Whole train and validation sets, for the interval evaluations."""
        return {"train_full": (self.x_train, self.y_train), "val": (self.x_val, self.y_val)}
