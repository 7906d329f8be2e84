"""Keras models of the reference's family read from ``.keras`` and ``.h5`` files, without Keras.

A ``.keras`` file (Keras 3) is a zip of ``config.json`` and an HDF5 ``model.weights.h5``;
an ``.h5`` file (Keras 2, tf.keras, or Keras 3's legacy save) is one HDF5 file whose
``model_config`` attribute holds the same kind of JSON. Only JSON and arrays are read:
no layer is deserialized, so a ``Lambda`` layer's code never runs (it is refused by
name, like any layer outside the family). Needs h5py (``pip install -e .[keras]``).

The family: ``Dense`` layers with ReLU (optionally each followed by one ``Dropout`` of
one rate), a final ``Dense`` of 10 with softmax (or plain logits), on 784 inputs or a
``Flatten`` of 28x28 images, as a ``Sequential`` or a functional chain.
"""

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from ..errors import UserError

INPUT_SHAPES = ((784,), (28, 28), (28, 28, 1))
NUM_CLASSES = 10
MAX_MEMBER_BYTES = 2 ** 31  # a member of a .keras zip larger than this is no model of this family
PASS_THROUGH = {"InputLayer"}


@dataclass
class KerasOptimizer:
    """RMSprop as the file describes it; ``square_avgs`` (one per weight, in the model's order) when saved."""

    lr: float
    rho: float
    eps: float
    eps_placement: str  # "inside" (Keras 3, tf.keras since 2.11) or "outside" (Keras 2's legacy RMSprop)
    square_avgs: Optional[List[np.ndarray]] = None
    iterations: Optional[int] = None
    missing: str = ""  # why no state was carried, said for a person


@dataclass
class KerasModel:
    hidden: Tuple[int, ...]
    dropout: float
    kernels: List[np.ndarray]  # (inputs, outputs) per Dense, Keras' layout
    biases: List[np.ndarray]
    optimizer: Optional[KerasOptimizer] = None
    keras_version: str = ""
    notes: List[str] = field(default_factory=list)


def read_keras_model(path: Path) -> KerasModel:
    """The model in a ``.keras`` or ``.h5`` file; :class:`UserError` for a file outside the family."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such Keras model file" if not path.exists() else f"{path}: not a regular file")
    try:
        import h5py
    except ImportError:
        raise UserError("reading Keras files needs h5py; pip install -e '.[keras]'") from None
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head.startswith(b"PK\x03\x04"):
            return _read_zip(path, h5py)
        if head.startswith(b"\x89HDF\r\n\x1a\n"):
            with h5py.File(path, "r") as h5:
                return _read_h5(h5, path)
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as e:
        raise UserError(f"{path}: not a readable Keras model ({type(e).__name__}: the file is truncated, "
                        "damaged or not written by Keras)") from None
    raise UserError(f"{path}: not a Keras model file (.keras or .h5)")


def _read_zip(path: Path, h5py) -> KerasModel:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: info for info in archive.infolist()}
        for name in ("config.json", "model.weights.h5"):
            if name not in members:
                raise UserError(f"{path}: not a Keras 3 model: the archive has no {name}")
            if members[name].file_size > MAX_MEMBER_BYTES:
                raise UserError(f"{path}: refused: its {name} declares {members[name].file_size:,} bytes")
        config = _json(archive.read("config.json"), path)
        metadata = _json(archive.read("metadata.json"), path) if "metadata.json" in members else {}
        weights = io.BytesIO(archive.read("model.weights.h5"))
    version = str(metadata.get("keras_version", "3"))
    layers = _chain(config, path)
    with h5py.File(weights, "r") as h5:
        # Keras 3 names each layer's weights by its class and rank among its kind: dense, dense_1, ...
        arrays = [_datasets(h5, f"layers/dense{'' if k == 0 else f'_{k}'}/vars", path)
                  for k in range(sum(layer["class_name"] == "Dense" for layer in layers))]
        model = _model_of(layers, arrays, path, version)
        compile_config = config.get("compile_config") or {}
        model.optimizer = _optimizer(compile_config.get("optimizer"), version,
                                     _datasets(h5, "optimizer/vars", path, required=False), model, path)
    return model


def _read_h5(h5, path: Path) -> KerasModel:
    if "model_config" not in h5.attrs:
        raise UserError(f"{path}: an HDF5 file without a Keras model_config (weights alone cannot say the "
                        "architecture)")
    config = _json(h5.attrs["model_config"], path)
    version = _text(h5.attrs.get("keras_version", "2"))
    layers = _chain(config, path)
    weights = h5["model_weights"] if "model_weights" in h5 else h5
    arrays = []
    for layer in layers:
        if layer["class_name"] == "Dense":
            group = weights[_name(layer)]
            arrays.append([np.asarray(group[_text(n)][()]) for n in group.attrs["weight_names"]])
    model = _model_of(layers, arrays, path, version)
    training = _json(h5.attrs["training_config"], path) if "training_config" in h5.attrs else {}
    saved = []
    if "optimizer_weights" in h5:
        group = h5["optimizer_weights"]
        saved = [(_text(n), np.asarray(group[_text(n)][()])) for n in group.attrs.get("weight_names", [])]
    model.optimizer = _optimizer(training.get("optimizer_config"), version, saved, model, path)
    return model


def _json(data, path: Path) -> dict:
    value = json.loads(data.decode() if isinstance(data, bytes) else data)
    if not isinstance(value, dict):
        raise UserError(f"{path}: the model's description is not a JSON object")
    return value


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(layer: dict) -> str:
    return str(layer.get("config", {}).get("name") or layer.get("name"))


def _datasets(h5, group_path: str, path: Path, required: bool = True) -> list:
    """``group/0, group/1, ...`` in numeric order, as ``(name, array)``."""
    if group_path not in h5:
        if required:
            raise UserError(f"{path}: the weights file holds no {group_path}: it does not match its description")
        return []
    group = h5[group_path]
    names = sorted((n for n in group if n.isdigit()), key=int)
    return [(f"{group_path}/{n}", np.asarray(group[n][()])) for n in names]


def _chain(config: dict, path: Path) -> List[dict]:
    """The model's layers in order; a functional model must be a single chain."""
    kind, inner = config.get("class_name"), config.get("config")
    layers = inner if isinstance(inner, list) else (inner or {}).get("layers")  # Keras 2.2 lists them directly
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(layers, list) or not layers:
        raise UserError(f"{path}: not a Sequential or functional Keras model (found {kind!r})")
    if not all(isinstance(layer, dict) and isinstance(layer.get("class_name"), str) for layer in layers):
        raise UserError(f"{path}: the model's description lists something other than layers")
    if kind != "Sequential":
        for previous, layer in zip(layers, layers[1:]):
            inbound = _inbound_names(layer.get("inbound_nodes", []))
            if inbound != [_name(previous)]:
                raise UserError(f"{path}: layer {_name(layer)!r} takes {inbound or 'no input'}, not just "
                                f"{_name(previous)!r}: only a chain of layers converts")
    return layers


def _inbound_names(nodes) -> List[str]:
    """The layer names a functional layer's inbound nodes refer to (Keras 3 and Keras 2 layouts)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            history = value.get("keras_history") if isinstance(value.get("keras_history"), list) else None
            if history:
                found.append(str(history[0]))
            for item in value.values():
                if item is not history:
                    walk(item)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:3]):
                found.append(value[0])  # Keras 2: [layer name, node index, tensor index, kwargs]
            else:
                for item in value:
                    walk(item)

    walk(nodes)
    return found


def _model_of(layers: List[dict], arrays: list, path: Path, version: str) -> KerasModel:
    """Check the layers against the family and pair each Dense with its kernel and bias."""
    input_shape, dense, dropouts, flattened = None, [], [], False
    for layer in layers:
        kind, config = layer["class_name"], layer.get("config") or {}
        name = f"{kind} {_name(layer)!r}"
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        if shape and not dense and not flattened:
            input_shape = tuple(shape[1:])
        if kind in PASS_THROUGH:
            continue
        if kind == "Flatten" and not dense and not flattened:
            flattened = True
        elif kind == "Dense":
            if not config.get("use_bias", True):
                raise UserError(f"{path}: unsupported layer {name}: a Dense without a bias")
            dense.append([int(config.get("units", -1)), config.get("activation", "linear")])
            dropouts.append(0.0)
        elif kind in ("Activation", "ReLU", "Softmax") and dense and dense[-1][1] == "linear":
            activation = config.get("activation") if kind == "Activation" else kind.lower()
            if kind == "ReLU" and any(config.get(k) not in (None, 0, 0.0) for k in
                                      ("max_value", "negative_slope", "threshold")):
                raise UserError(f"{path}: unsupported layer {name}: a ReLU with a cap, slope or threshold")
            dense[-1][1] = activation
        elif kind == "Dropout" and dense and dropouts[-1] == 0.0:
            dropouts[-1] = float(config.get("rate", 0.0))
        else:
            raise UserError(f"{path}: unsupported layer {name}: this converter takes Dense layers with ReLU, "
                            "Dropout, and a final Dense with softmax, on 784 inputs or a Flatten of 28x28")
    if not dense:
        raise UserError(f"{path}: the model has no Dense layer")
    *hidden_layers, (classes, last) = dense
    for units, activation in hidden_layers:
        if activation != "relu":
            raise UserError(f"{path}: unsupported activation {activation!r} in a hidden Dense: only relu converts")
    if last not in ("softmax", "linear") or classes != NUM_CLASSES:
        raise UserError(f"{path}: the last Dense must give {NUM_CLASSES} classes with softmax, "
                        f"not {classes} with {last!r}")
    hidden_dropouts = set(dropouts[:-1])
    if dropouts[-1] or len(hidden_dropouts) > 1:
        raise UserError(f"{path}: unsupported dropout: torch_mnist's MLP drops out after every hidden layer "
                        f"at one rate, this model after {dropouts}")
    if input_shape is not None and input_shape not in INPUT_SHAPES or (
            input_shape is not None and len(input_shape) > 1 and not flattened):
        raise UserError(f"{path}: unsupported input shape {list(input_shape)}: only 784 values or a Flatten of "
                        "28x28 images convert")
    kernels, biases = _weights(arrays, dense, path)
    return KerasModel(tuple(units for units, _ in hidden_layers), hidden_dropouts.pop() if hidden_dropouts else 0.0,
                      kernels, biases, keras_version=version)


def _weights(arrays: list, dense: list, path: Path) -> Tuple[list, list]:
    kernels, biases = [], []
    inputs = 784
    for (units, _), saved in zip(dense, arrays):
        saved = [array for _, array in saved] if saved and isinstance(saved[0], tuple) else saved
        matrices = [a for a in saved if a.ndim == 2]
        vectors = [a for a in saved if a.ndim == 1]
        if len(saved) != 2 or len(matrices) != 1 or len(vectors) != 1:
            raise UserError(f"{path}: a Dense layer's weights are not one kernel and one bias")
        kernel, bias = matrices[0], vectors[0]
        if kernel.shape != (inputs, units) or bias.shape != (units,):
            raise UserError(f"{path}: a Dense kernel of shape {list(kernel.shape)} where the chain needs "
                            f"{[inputs, units]}")
        for array in (kernel, bias):
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise UserError(f"{path}: a Dense layer's weights are not finite floating-point numbers")
        kernels.append(kernel.astype(np.float32))
        biases.append(bias.astype(np.float32))
        inputs = units
    if len(kernels) != len(dense):
        raise UserError(f"{path}: the weights file holds fewer Dense layers than its description")
    return kernels, biases


def _optimizer(description, version: str, saved: list, model: KerasModel, path: Path) -> Optional[KerasOptimizer]:
    """RMSprop's hyperparameters and, where saved, its square averages; None for another optimizer."""
    if isinstance(description, str):
        description = {"class_name": description, "config": {}}
    if not isinstance(description, dict):
        return None
    kind = str(description.get("class_name", "")).split(">")[-1]
    config = description.get("config") or {}
    if kind.lower() != "rmsprop":
        model.notes.append(f"it was compiled with {kind or 'an unnamed optimizer'}, not RMSprop: the checkpoint "
                           "carries the weights and the reference's RMSprop settings")
        return None
    lr = config.get("learning_rate", config.get("lr", 1e-3))
    values = {"lr": lr, "rho": config.get("rho", 0.9), "eps": config.get("epsilon", 1e-7)}
    if not all(type(v) in (int, float) and np.isfinite(v) for v in values.values()):
        model.notes.append("its RMSprop settings are not plain numbers (a schedule?): the checkpoint carries the "
                           "weights and the reference's RMSprop settings")
        return None
    values = {k: float(str(np.float32(v))) for k, v in values.items()}  # Keras keeps them in float32
    new_optimizer = int(version.split(".")[0] or 0) >= 3 or config.get("is_legacy_optimizer") is False
    optimizer = KerasOptimizer(**values, eps_placement="inside" if new_optimizer else "outside")
    if config.get("momentum") or config.get("centered"):
        optimizer.missing = "its RMSprop uses momentum or is centred, which torch_mnist's RMSprop does not"
        return optimizer
    averages = [array for _, array in saved if array.ndim > 0]
    shapes = [shape for kernel, bias in zip(model.kernels, model.biases) for shape in (kernel.shape, bias.shape)]
    if not averages:
        optimizer.missing = "the file holds no optimizer state"
    elif [a.shape for a in averages] != shapes or not all(np.isfinite(a).all() and (a >= 0).all() for a in averages):
        optimizer.missing = "its optimizer state does not match the model's weights"
    else:
        optimizer.square_avgs = [a.astype(np.float32) for a in averages]
        counters = [int(array) for name, array in saved if array.ndim == 0 and re.search("iter", name, re.I)]
        optimizer.iterations = counters[0] if counters else None
        if optimizer.iterations is None:  # Keras 3's .keras: the first scalar is the iteration count
            scalars = [array for _, array in saved if array.ndim == 0]
            optimizer.iterations = int(scalars[0]) if scalars and np.issubdtype(scalars[0].dtype, np.integer) else None
    return optimizer
