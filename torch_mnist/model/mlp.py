"""The reference network: a 784 -> 512 ReLU -> 10 multilayer perceptron (and deeper variants)."""

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

IMAGE_PIXELS = 28 * 28


class MLP(nn.Module):
    """Keras' ``Dense(512, relu) -> Dense(10)`` as a PyTorch module.

    ``hidden`` may list several layers and ``dropout`` follows each hidden
    layer, as in Keras' classic ``mnist_mlp`` example (``hidden=(512, 512),
    dropout=0.2``), or gives one rate per hidden layer (``(0.0, 0.3)``).
    Layers are named ``fc1, fc2, ...``. ``forward`` returns logits; the
    softmax of the Keras model lives in the loss (see
    :mod:`torch_mnist.model.losses`). Accepts images shaped ``(N, 784)`` or
    ``(N, 1, 28, 28)``.
    """

    def __init__(self, in_features: int = IMAGE_PIXELS, hidden: Union[int, Sequence[int]] = 512,
                 num_classes: int = 10, dropout: Union[float, Sequence[float]] = 0.0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.in_features = in_features
        self.hidden: Tuple[int, ...] = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        self.num_classes = num_classes
        # One rate after every hidden layer, or one rate per hidden layer (Keras models often drop out after
        # some layers only: Dense(512), Dense(256), Dropout(0.3), Dense(10) is (0.0, 0.3)).
        rates = (float(dropout),) * len(self.hidden) if isinstance(dropout, (int, float)) else tuple(dropout)
        if len(rates) != len(self.hidden) or not all(0.0 <= rate < 1.0 for rate in rates):
            raise ValueError(f"dropout must be a rate in [0, 1) or one per hidden layer, got {dropout}")
        self.dropout = dropout if isinstance(dropout, (int, float)) else rates
        self.dropout_rates = rates
        widths = (in_features, *self.hidden, num_classes)
        self.layers = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
        for i, layer in enumerate(self.layers, start=1):
            self.add_module(f"fc{i}", layer)  # fc1.weight, ...: the names checkpoints use
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Initialise like Keras' ``Dense``: Glorot-uniform kernels, zero biases.

        torch's own ``nn.Linear`` init (Kaiming-uniform weights, non-zero
        biases) would start training somewhere the reference never was.
        """
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)  # (N, 1, 28, 28) -> (N, 784); a no-op view for (N, 784)
        for layer, rate in zip(self.layers[:-1], self.dropout_rates):
            x = torch.relu(layer(x))
            if rate:
                x = nn.functional.dropout(x, rate, self.training)
        return self.layers[-1](x)

    def architecture(self) -> dict:
        """The constructor arguments, as plain types, to rebuild this model."""
        return {"in_features": self.in_features, "hidden": list(self.hidden), "num_classes": self.num_classes,
                "dropout": self.dropout if isinstance(self.dropout, float) else list(self.dropout)}
