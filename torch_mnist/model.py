"""The reference network: a 784 -> 512 ReLU -> 10 multilayer perceptron."""

from typing import Optional

import torch
from torch import nn

IMAGE_PIXELS = 28 * 28


class MLP(nn.Module):
    """Keras' ``Dense(512, relu) -> Dense(10)`` as a PyTorch module.

    ``forward`` returns logits; the softmax of the Keras model lives in the
    loss instead (see :mod:`torch_mnist.losses`). Accepts images shaped
    ``(N, 784)`` or ``(N, 1, 28, 28)``.
    """

    def __init__(self, in_features: int = IMAGE_PIXELS, hidden: int = 512, num_classes: int = 10,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        self.in_features = in_features
        self.hidden = hidden
        self.num_classes = num_classes
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: Optional[torch.Generator] = None) -> None:
        """Initialise like Keras' ``Dense``: Glorot-uniform kernels, zero biases.

        torch's own ``nn.Linear`` init (Kaiming-uniform weights, non-zero
        biases) would start training somewhere the reference never was.
        """
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)  # (N, 1, 28, 28) -> (N, 784); a no-op view for (N, 784)
        return self.fc2(torch.relu(self.fc1(x)))

    def architecture(self) -> dict:
        """The constructor arguments, as plain types, to rebuild this model."""
        return {"in_features": self.in_features, "hidden": self.hidden, "num_classes": self.num_classes}
