"""The reference program in real Keras 3 (torch backend), for parity tests and speed comparisons.

Needs the optional extra ``pip install -e .[parity]``. Importing this module
does not import Keras; each function does, after selecting the torch backend.
"""

import os
import time
from typing import Callable, Dict

import numpy as np
import torch

from ..errors import UserError
from ..model.mlp import MLP


def import_keras(backend: str = "torch"):
    """Keras 3 on ``backend`` (torch by default), or a :class:`UserError` saying how to get it.

    Keras picks its backend once per process, from ``KERAS_BACKEND`` at its first import.
    """
    os.environ.setdefault("KERAS_BACKEND", backend)
    try:
        import keras
    except ImportError:
        raise UserError("Keras is not installed; pip install -e '.[parity]'") from None
    if keras.backend.backend() != backend:
        raise UserError(f"Keras runs on the {keras.backend.backend()} backend; set KERAS_BACKEND={backend}")
    return keras


def keras_reference_model(model: MLP, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                          backend: str = "torch"):
    """The reference's ``Sequential`` (Dense relu, Dense softmax, RMSprop, categorical CE),
    compiled, starting from ``model``'s current weights."""
    keras = import_keras(backend)
    if len(model.hidden) != 1 or any(model.dropout_rates):
        raise ValueError("the Keras reference has one hidden layer and no dropout")
    reference = keras.Sequential([
        keras.Input((model.in_features,)),
        keras.layers.Dense(model.hidden[0], activation="relu"),
        keras.layers.Dense(model.num_classes, activation="softmax"),
    ])
    reference.compile(optimizer=keras.optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps),
                      loss="categorical_crossentropy", metrics=["accuracy"])
    # Keras stores a Dense kernel as (inputs, outputs): the transpose of nn.Linear's weight.
    for dense, linear in zip(reference.layers, model.layers):
        dense.set_weights([linear.weight.detach().cpu().numpy().T, linear.bias.detach().cpu().numpy()])
    return reference


def keras_parameters(reference) -> Dict[str, torch.Tensor]:
    """The Keras model's weights under our ``state_dict`` names and layouts."""
    weights = {}
    for name, dense in zip(("fc1", "fc2"), reference.layers):
        kernel, bias = dense.get_weights()
        weights[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
        weights[f"{name}.bias"] = torch.from_numpy(bias)
    return weights


def one_hot(labels: torch.Tensor, num_classes: int = 10) -> np.ndarray:
    """Integer labels as the one-hot float array ``categorical_crossentropy`` takes."""
    return torch.nn.functional.one_hot(labels.cpu(), num_classes).float().numpy()


def largest_difference(ours: Dict[str, torch.Tensor], theirs: Dict[str, torch.Tensor]) -> Dict:
    """The largest absolute difference between two parameter sets, and where it is."""
    worst = {"difference": 0.0, "parameter": None, "index": None}
    for name, tensor in ours.items():
        difference = (tensor.detach().cpu() - theirs[name]).abs()
        if difference.max().item() > worst["difference"]:
            flat = int(difference.argmax())
            worst = {"difference": difference.max().item(), "parameter": name,
                     "index": tuple(int(i) for i in np.unravel_index(flat, difference.shape)),
                     "ours": tensor.flatten()[flat].item(), "keras": theirs[name].flatten()[flat].item()}
    return worst


def keras_epoch_timer(images: np.ndarray, labels: torch.Tensor, test_images: np.ndarray,
                      test_labels: torch.Tensor, batch_size: int = 128, backend: str = "torch") -> Callable[[], float]:
    """A function that trains the reference program one more epoch under Keras 3 (fit with
    validation) and returns its seconds; the first call includes Keras' warm-up."""
    reference = keras_reference_model(MLP(), backend=backend)
    train_targets, test_targets = one_hot(labels), one_hot(test_labels)

    def one_epoch() -> float:
        start = time.perf_counter()
        reference.fit(images, train_targets, batch_size=batch_size, epochs=1, verbose=0,
                      validation_data=(test_images, test_targets))
        return time.perf_counter() - start

    return one_epoch
