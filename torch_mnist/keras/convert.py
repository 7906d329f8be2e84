"""Between Keras and torch_mnist: a Keras model of the family as a checkpoint, and a checkpoint as a
``.keras`` file that ``keras.saving.load_model`` reads and that predicts what the checkpoint predicts."""

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..training.checkpoint import build_model, checkpoint_config, make_checkpoint
from ..config import TrainConfig
from ..errors import UserError
from ..history import HISTORY_KEYS
from .files import KerasModel
from ..recipe import build, normalization_of

TRAIN_IMAGES = 60_000  # every supported dataset's training split
EPS_SEMANTICS = {"outside": "keras2", "inside": "keras3"}  # where a Keras RMSprop adds epsilon -> our semantics


@dataclass
class Conversion:
    checkpoint: dict
    optimizer_carried: bool
    iterations: Optional[int]  # the Keras run's steps, where the file says
    note: str  # what was not carried over, and why ("" when everything was)


def checkpoint_from_keras(model: KerasModel, normalize: str = "scale") -> Conversion:
    """A checkpoint at epoch 0 of a run with the Keras model's weights, settings and, where the file holds it,
    its RMSprop state: ``train.py --resume`` continues from there."""
    optimizer = model.optimizer
    if model.rescaling is not None:
        normalize = _normalization_of_rescaling(model.rescaling, normalize)
    config = TrainConfig(hidden=model.hidden, dropout=model.dropout, normalize=normalize)
    if optimizer is not None:
        config = TrainConfig(hidden=model.hidden, dropout=model.dropout, normalize=normalize, lr=optimizer.lr,
                             rho=optimizer.rho, eps=optimizer.eps,
                             keras_semantics=EPS_SEMANTICS[optimizer.eps_placement])
    config.validate()
    recipe = build(config, torch.device("cpu"))
    with torch.no_grad():
        for layer, kernel, bias in zip(recipe.model.layers, model.kernels, model.biases):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))  # Keras keeps (inputs, outputs)
            layer.bias.copy_(torch.from_numpy(bias))
    carried = optimizer is not None and optimizer.square_avgs is not None
    if carried:
        for parameter, average in zip(recipe.model.parameters(), optimizer.square_avgs):
            # a Keras kernel's average is laid out as the kernel: transposed like it
            average = average.T if average.ndim == 2 else average
            recipe.optimizer.state[parameter]["square_avg"] = torch.from_numpy(np.ascontiguousarray(average))
    history = {key: [] for key in HISTORY_KEYS}
    checkpoint = make_checkpoint(recipe.model, recipe.optimizer, config, 0, history,
                                 torch.Generator().manual_seed(config.seed))
    reasons = list(model.notes) + ([optimizer.missing] if optimizer is not None and optimizer.missing else [])
    note = "" if carried else "; ".join(reasons or ["the file holds no optimizer state"])
    return Conversion(checkpoint, carried, optimizer.iterations if carried else None, note)


def _normalization_of_rescaling(rescaling: tuple, normalize: str) -> str:
    """The normalization a Keras model's leading ``Rescaling(scale, offset)`` does to x / 255: our standardize
    (as ``--to-keras`` writes it for such a run); any other is refused, naming its values."""
    scale, offset = rescaling
    standardize = normalization_of(TrainConfig(normalize="standardize"))
    expected = (1.0 / standardize.std, -standardize.mean / standardize.std)
    if not all(abs(a - b) <= 1e-6 * abs(b) for a, b in zip(rescaling, expected)):
        raise UserError(f"a leading Rescaling(scale={scale}, offset={offset}) converts only as MNIST's "
                        f"standardization of x / 255 (scale={expected[0]:.6g}, offset={expected[1]:.6g})")
    if normalize != "scale":
        raise UserError("the model standardizes its inputs itself (a leading Rescaling layer): it takes x / 255, "
                        "so leave --normalize at scale")
    return "standardize"


def write_keras(checkpoint: dict, out: Path) -> None:
    """``checkpoint``'s model as a Keras 3 ``.keras`` file taking what the reference fed its model
    (784 pixels / 255), compiled with the run's RMSprop, written atomically."""
    from ..files import staged
    from .parity import import_keras

    keras = import_keras()
    config = checkpoint_config(checkpoint)
    model = build_model(checkpoint)
    layers = [keras.Input((model.in_features,))]
    normalization = normalization_of(config)
    if normalization.name != "scale":  # our inputs are (x / 255 - mean) / std; Keras users feed x / 255
        layers.append(keras.layers.Rescaling(1.0 / normalization.std, -normalization.mean / normalization.std))
    rates = (*model.dropout_rates, 0.0)  # after each hidden layer where its run had it
    for i, (linear, rate) in enumerate(zip(model.layers, rates)):
        last = i == len(model.layers) - 1
        layers.append(keras.layers.Dense(linear.out_features, activation="softmax" if last else "relu"))
        if rate:
            layers.append(keras.layers.Dropout(rate))
    keras_model = keras.Sequential(layers)
    for dense, linear in zip([layer for layer in keras_model.layers if isinstance(layer, keras.layers.Dense)],
                             model.layers):
        dense.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    # Keras 3's RMSprop adds epsilon inside the square root: predictions are the same, and further training in
    # Keras follows Keras 3's arithmetic whatever the run's keras_semantics were.
    keras_model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=config.lr, rho=config.rho,
                                                           epsilon=config.eps),
                        loss="categorical_crossentropy", metrics=["accuracy"])
    _carry_square_averages(checkpoint, model, keras_model)
    with staged(out) as tmp:  # under out's own name (Keras insists on .keras), renamed over it when whole
        keras_model.save(tmp)
        if not tmp.is_file():
            raise UserError(f"Keras wrote no file for {out}")
        _public_optimizer(tmp)


def _public_optimizer(path: Path) -> None:
    """Keras on torch records its optimizer as the torch backend's own class, which Keras on another backend
    (TensorFlow's, JAX) cannot import: the file names the public ``keras.optimizers.RMSprop`` instead, which
    every backend builds (its state is the same variables)."""
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            if info.filename == "config.json":
                config = json.loads(data)
                optimizer = config.get("compile_config", {}).get("optimizer")
                if isinstance(optimizer, dict):
                    optimizer.update(module="keras.optimizers", class_name="RMSprop", registered_name=None)
                data = json.dumps(config).encode()
            archive.writestr(info, data)


def training_steps(checkpoint: dict) -> int:
    """The optimizer steps a checkpoint's run has taken: its epochs of full and ragged batches."""
    config = checkpoint_config(checkpoint)
    return checkpoint["epoch"] * -(-TRAIN_IMAGES // config.batch_size)


def _carry_square_averages(checkpoint: dict, model, keras_model) -> None:
    """The run's RMSprop averages and step count into Keras' optimizer (built for the purpose), so that the
    file holds the whole training state, as a Keras-saved model does."""
    keras_model.optimizer.build(keras_model.trainable_variables)
    keras_model.optimizer.iterations.assign(training_steps(checkpoint))
    saved = checkpoint["optimizer_state"]["state"]
    velocities = [v for v in keras_model.optimizer.variables if len(v.shape) > 0]
    if len(saved) != len(velocities):
        return  # a run saved before its first step: Keras' zeros are the same state
    for index, (parameter, velocity) in enumerate(zip(model.parameters(), velocities)):
        average = saved[index]["square_avg"].numpy()
        velocity.assign(average.T if average.ndim == 2 else average)
