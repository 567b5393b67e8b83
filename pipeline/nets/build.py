"""The network a cell trains, chosen by model.kind: the stacked MLP or the stacked CNN.

from pipeline.nets.build import build_model
model = build_model((64,), 10, seeds=[0, 1], model=cell.model, variant=cell.variant)
"""

from __future__ import annotations

import math

from pipeline.config import ModelSettings, VariantSettings
from pipeline.nets.cnn import StackedCNN
from pipeline.nets.mlp import StackedBase, StackedMLP


def build_model(
    input_shape: tuple[int, ...], d_out: int, seeds: list[int], model: ModelSettings, variant: VariantSettings
) -> StackedBase:
    """model.kind's network for examples of shape (D,) or (C, H, W); an MLP reads images
    flattened (the data module's `flatten=True`), so it is built for prod(shape) inputs."""
    if model.kind == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model.kind cnn needs images (C, H, W), got examples of shape {tuple(input_shape)}")
        return StackedCNN(input_shape[0], d_out, seeds, model, variant)
    return StackedMLP(math.prod(input_shape), d_out, seeds, model, variant)
