"""Keras' ``model.summary()`` for an :class:`~torch_mnist.model.mlp.MLP`: each layer, its output shape and
its parameter count, and the totals, in the table Keras 2 printed (the one course reports show)."""

from dataclasses import dataclass
from typing import List

from torch import nn

from .mlp import MLP

WIDTHS = (29, 26, 10)  # Keras 2's columns: "Layer (type)", "Output Shape", "Param #"
RULE = 65


@dataclass(frozen=True)
class LayerRow:
    name: str  # as Keras would name it: dense, dense_1, dropout, ...
    kind: str  # Dense, Dropout
    output_shape: tuple  # (None, units): None is the batch
    parameters: int


def layer_rows(model: MLP) -> List[LayerRow]:
    """The rows of Keras' table for ``model``: a Dense per linear layer (its ReLU or softmax is its
    activation, as in the reference), a Dropout after a hidden layer that has one."""
    rows, dropouts = [], 0
    rates = (*model.dropout_rates, 0.0)
    for index, (layer, rate) in enumerate(zip(model.layers, rates)):
        rows.append(LayerRow("dense" if index == 0 else f"dense_{index}", "Dense", (None, layer.out_features),
                             layer.in_features * layer.out_features + layer.out_features))
        if rate:
            rows.append(LayerRow("dropout" if dropouts == 0 else f"dropout_{dropouts}", "Dropout",
                                 (None, layer.out_features), 0))
            dropouts += 1
    return rows


def count_parameters(model: nn.Module) -> dict:
    """Total, trainable and non-trainable parameter counts (Keras' three totals)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def summary(model: MLP) -> str:
    """The table Keras 2's ``model.summary()`` prints for the same model, with its parameter counts
    (401,920 and 5,130 for the reference: 407,050 in all)."""
    def row(*cells) -> str:
        return " " + "".join(f"{cell:<{width}}" for cell, width in zip(cells, WIDTHS)).rstrip()

    lines = ['Model: "sequential"', "_" * RULE, row("Layer (type)", "Output Shape", "Param #"), "=" * RULE]
    for index, layer in enumerate(layer_rows(model)):
        if index:
            lines.append("")
        lines.append(row(f"{layer.name} ({layer.kind})", str(layer.output_shape), str(layer.parameters)))
    counts = count_parameters(model)
    lines += ["=" * RULE, f"Total params: {counts['total']:,}", f"Trainable params: {counts['trainable']:,}",
              f"Non-trainable params: {counts['non_trainable']:,}", "_" * RULE]
    return "\n".join(lines)
