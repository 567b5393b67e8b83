"""What every benchmark figure is measured against: the bare stacked loop, and a fresh store.

    from benchmarks.reference import bare_loop, init_store
    seconds = bare_loop(cell)              # the cell's compute floor
    uri = init_store(Path("/tmp/store"))   # a migrated SQLite MLflow store, no timed run pays that

Used by the figures of benchmarks/run.py: benchmarks/grid_floor.py (figure 0) and benchmarks/figures/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def bare_loop(cell) -> float:
    """Seconds to train the cell's stacked members with plain PyTorch: pipeline.module's model,
    optimizer, batches and loss, nothing else (no Lightning, no tracking, no measurements)."""
    import torch
    import torch.nn.functional as F

    from pipeline.data.sets import StackedBatches, StackedDataModule
    from pipeline.nets.build import build_model
    from pipeline.nets.optim import make_optimizer

    members, o, tr = cell.members(), cell.optim, cell.train
    seeds = [s for _, s in members]
    dm = StackedDataModule(cell.dataset, seeds, o.batch_size, tr.steps, flatten=cell.model.kind == "mlp")
    model = build_model(dm.input_shape, dm.num_classes, seeds, cell.model, cell.variant)  # as run_cell
    t0 = time.perf_counter()
    lrs = torch.tensor([lr for lr, _ in members], dtype=torch.float32)
    # as NormLabModule.configure_optimizers
    opt = make_optimizer(
        o.name,
        [p for p in model.parameters() if p.requires_grad],
        lrs,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        betas=o.betas,
    )
    alive = torch.ones(len(members), dtype=torch.bool)
    population = model.uses_population()
    for t, (x, y) in enumerate(StackedBatches(dm.x_train, dm.y_train, seeds, o.batch_size, tr.steps)):
        if population and t % cell.variant.refresh_every == 0:
            model.refresh_population(dm.x_train.expand(len(members), *dm.x_train.shape))
        logits = model(x)  # the loss of NormLabModule.member_losses: per-member mean cross-entropy
        m, b, c = logits.shape
        loss = F.cross_entropy(logits.reshape(m * b, c), y.reshape(m * b), reduction="none").view(m, b).mean(1)
        # the same divergence mask as the module, so a diverged member is frozen, not NaN-ing on
        live = alive & torch.isfinite(loss) & (loss < tr.diverge_loss)
        opt.zero_grad()
        torch.where(live, loss, torch.zeros_like(loss)).sum().backward()
        opt.alive = live
        opt.step()
        alive &= live
    return time.perf_counter() - t0


_EMPTY_STORE: list[Path] = []  # the first store made, copied for the others (migrations take seconds)


def init_store(folder: Path) -> str:
    """A fresh SQLite MLflow store with its schema created, so no timed run pays the migrations."""
    from pipeline.tracking.runs import connect

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    if _EMPTY_STORE:
        shutil.copy(_EMPTY_STORE[0], db)
    else:
        connect(f"sqlite:///{db}")
        shutil.copy(db, folder.parent / "empty-mlflow.db")
        _EMPTY_STORE.append(folder.parent / "empty-mlflow.db")
    return f"sqlite:///{db}"
