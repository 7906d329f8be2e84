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

import json
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..config import MAX_LAYERS, MAX_UNITS, TrainConfig
from ..errors import UserError, printable
from ..recipe import check_fits_in_memory
from .storage import check_dataset, member, member_bytes, parse_json, read_dataset, unpack

INPUT_SHAPES = ((784,), (28, 28), (28, 28, 1))
NUM_CLASSES = 10
MAX_JSON_BYTES = 64 * 2 ** 20  # a description of this family is a few kB; a .keras member beyond this is refused
FLOAT32_MAX = float(np.finfo(np.float32).max)
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
    dropout: Union[float, Tuple[float, ...]]  # one rate after every hidden layer, or one rate each
    kernels: List[np.ndarray]  # (inputs, outputs) per Dense, Keras' layout
    biases: List[np.ndarray]
    rescaling: Optional[Tuple[float, float]] = None  # a leading Rescaling layer's (scale, offset)
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
    with zipfile.ZipFile(path) as archive, tempfile.TemporaryFile() as weights:
        members = {info.filename: info for info in archive.infolist()}
        for name in ("config.json", "model.weights.h5"):
            if name not in members:
                raise UserError(f"{path}: not a Keras 3 model: the archive has no {name}")
        config = parse_json(member_bytes(archive, members["config.json"], MAX_JSON_BYTES, path), path)
        metadata = parse_json(member_bytes(archive, members["metadata.json"], MAX_JSON_BYTES, path), path) \
            if "metadata.json" in members else {}
        version = _version(metadata.get("keras_version", "3"), "metadata.json's keras_version", path)
        model = _model_of(_chain(config, path), path, version)
        check_fits_in_memory(TrainConfig(hidden=model.hidden))  # before a byte of weights is unpacked
        # Unpacked to a file, not to memory, and no further than its declared size: a zip bomb costs disk at
        # most as large as the model it claims to be.
        unpack(archive, members["model.weights.h5"], _weights_bytes(model), weights, path)
        with h5py.File(weights, "r") as h5:
            # Keras 3 names each layer's weights by its class and rank among its kind: dense, dense_1, ...
            _weights(model, [_datasets(h5, f"layers/dense{'' if k == 0 else f'_{k}'}/vars", path)
                             for k in range(len(model.hidden) + 1)], path)
            compile_config = config.get("compile_config") or {}
            model.optimizer = _optimizer(compile_config.get("optimizer") if isinstance(compile_config, dict)
                                         else None, version, _datasets(h5, "optimizer/vars", path, required=False),
                                         model, path)
    return model


def _weights_bytes(model: KerasModel) -> int:
    """The most a weights file of ``model`` needs: its weights and RMSprop's averages in float64, and room
    for HDF5's own structures."""
    values = sum(int(np.prod(shape)) for shapes in _shapes(model) for shape in shapes)
    return 2 * 8 * values + (1 << 20)


def _read_h5(h5, path: Path) -> KerasModel:
    if "model_config" not in h5.attrs:
        raise UserError(f"{path}: an HDF5 file without a Keras model_config (weights alone cannot say the "
                        "architecture)")
    config = parse_json(h5.attrs["model_config"], path)
    version = _version(_text(h5.attrs.get("keras_version", "2")), "keras_version", path)
    layers = _chain(config, path)
    model = _model_of(layers, path, version)
    check_fits_in_memory(TrainConfig(hidden=model.hidden))
    weights = member(h5, "model_weights", path) if "model_weights" in h5 else h5
    datasets = []
    for layer in layers:
        if layer["class_name"] == "Dense":
            group = member(weights, _name(layer), path)
            datasets.append([(_text(n), member(group, _text(n), path)) for n in group.attrs.get("weight_names", [])])
    _weights(model, datasets, path)
    training = parse_json(h5.attrs["training_config"], path) if "training_config" in h5.attrs else {}
    saved = []
    if "optimizer_weights" in h5:
        group = member(h5, "optimizer_weights", path)
        saved = [(_text(n), member(group, _text(n), path)) for n in group.attrs.get("weight_names", [])]
    model.optimizer = _optimizer(training.get("optimizer_config"), version, saved, model, path)
    return model


def _version(value, field: str, path: Path) -> Tuple[int, int]:
    """A Keras version string ("2.15.0", "3.4.1") as (major, minor); a line naming the field otherwise."""
    match = re.match(r"^\s*(\d{1,4})(?:\.(\d{1,4}))?", value) if isinstance(value, str) else None
    if match is None:
        raise UserError(f"{path}: {field} is {printable(repr(value))}, not a Keras version")
    return int(match.group(1)), int(match.group(2) or 0)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(layer: dict) -> str:
    return str(layer.get("config", {}).get("name") or layer.get("name"))


def _datasets(h5, group_path: str, path: Path, required: bool = True) -> list:
    """``group/0, group/1, ...`` in numeric order, as ``(name, dataset)``, nothing read yet."""
    if group_path not in h5:
        if required:
            raise UserError(f"{path}: the weights file holds no {group_path}: it does not match its description")
        return []
    group = member(h5, group_path, path)
    names = sorted((n for n in group if n.isdigit()), key=int)
    return [(f"{group_path}/{n}", member(group, n, path)) for n in names]


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


def _model_of(layers: List[dict], path: Path, version: str) -> KerasModel:
    """Check the layers against the family (no weights read yet): the model with its Dense layers' shapes
    known and their kernels and biases still empty."""
    input_shape, dense, dropouts, flattened, rescaling = None, [], [], False, None
    for layer in layers:
        kind, config = layer["class_name"], layer.get("config") or {}
        if not isinstance(config, dict):
            raise UserError(f"{path}: layer {printable(_name(layer))!r}'s config is not a JSON object")
        name = f"{printable(kind)} '{printable(_name(layer))}'"
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        if shape and not dense and not flattened:
            input_shape = tuple(shape[1:]) if isinstance(shape, list) else shape
        if kind in PASS_THROUGH:
            continue
        if kind == "Rescaling" and not dense and rescaling is None:
            rescaling = (_number(config.get("scale"), f"{name} scale", path),
                         _number(config.get("offset", 0.0), f"{name} offset", path))
        elif kind == "Flatten" and not dense and not flattened:
            flattened = True
        elif kind == "Dense":
            if not config.get("use_bias", True):
                raise UserError(f"{path}: unsupported layer {name}: a Dense without a bias")
            units = config.get("units")
            if type(units) is not int or not 1 <= units <= MAX_UNITS or len(dense) >= MAX_LAYERS + 1:
                raise UserError(f"{path}: layer {name} declares {printable(repr(units))} units: this family's "
                                f"layers have 1 to {MAX_UNITS} units, at most {MAX_LAYERS} hidden layers")
            dense.append([units, config.get("activation", "linear")])
            dropouts.append(0.0)
        elif kind in ("Activation", "ReLU", "Softmax") and dense and dense[-1][1] == "linear":
            activation = config.get("activation") if kind == "Activation" else kind.lower()
            if kind == "ReLU" and any(config.get(k) not in (None, 0, 0.0) for k in
                                      ("max_value", "negative_slope", "threshold")):
                raise UserError(f"{path}: unsupported layer {name}: a ReLU with a cap, slope or threshold")
            dense[-1][1] = activation
        elif kind == "Dropout" and dense and dropouts[-1] == 0.0:
            rate = config.get("rate", 0.0)
            if type(rate) not in (int, float) or not 0.0 <= rate < 1.0:  # NaN fails the comparison too
                raise UserError(f"{path}: layer {name} has rate {printable(repr(rate))}; a dropout rate is a "
                                "number in [0, 1)")
            dropouts[-1] = float(rate)
        else:
            raise UserError(f"{path}: unsupported layer {name}: this converter takes Dense layers with ReLU, "
                            "Dropout, and a final Dense with softmax, on 784 inputs or a Flatten of 28x28")
    _check_chain(dense, dropouts, input_shape, flattened, path)
    hidden = tuple(units for units, _ in dense[:-1])
    rates = tuple(dropouts[:-1])
    dropout = rates[0] if len(set(rates)) == 1 else rates  # one rate for all, as MLP takes it, where it is one
    return KerasModel(hidden, dropout, [], [], rescaling, keras_version=version)


def _check_chain(dense: list, dropouts: list, input_shape, flattened: bool, path: Path) -> None:
    """The chain as a whole: ReLU hidden layers, a last Dense of 10 classes, no dropout after it, an input of
    784 values or a flattened 28x28 image."""
    if not dense:
        raise UserError(f"{path}: the model has no Dense layer")
    *hidden_layers, (classes, last) = dense
    for units, activation in hidden_layers:
        if activation != "relu":
            raise UserError(f"{path}: unsupported activation {activation!r} in a hidden Dense: only relu converts")
    if last not in ("softmax", "linear") or classes != NUM_CLASSES:
        raise UserError(f"{path}: the last Dense must give {NUM_CLASSES} classes with softmax, "
                        f"not {classes} with {last!r}")
    if dropouts[-1]:
        raise UserError(f"{path}: unsupported dropout after the output layer (rate {dropouts[-1]}): the model's "
                        "probabilities would be dropped")
    if input_shape is not None and (not isinstance(input_shape, tuple) or input_shape not in INPUT_SHAPES or (
            len(input_shape) > 1 and not flattened)):
        shown = list(input_shape) if isinstance(input_shape, tuple) else input_shape
        raise UserError(f"{path}: unsupported input shape {printable(str(shown))}: only 784 values or a "
                        "Flatten of 28x28 images convert")


def _shapes(model: KerasModel) -> List[Tuple[int, ...]]:
    """Each Dense layer's (kernel, bias) shapes, in Keras' layout."""
    widths = (784, *model.hidden, NUM_CLASSES)
    return [((inputs, outputs), (outputs,)) for inputs, outputs in zip(widths[:-1], widths[1:])]


def _number(value, what: str, path: Path) -> float:
    """A finite float from a file's JSON, or a line naming the field and its value."""
    if type(value) not in (int, float) or not np.isfinite(value):
        raise UserError(f"{path}: {what} is {printable(repr(value))}, not a finite number")
    return float(value)


def _weights(model: KerasModel, layers_datasets: list, path: Path) -> None:
    """Each Dense layer's kernel and bias read into ``model``: every dataset checked (its storage, type and
    shape against the layer's) before a byte of it is read, so a file cannot make us allocate what it
    declares or read from elsewhere."""
    if len(layers_datasets) != len(model.hidden) + 1:
        raise UserError(f"{path}: the weights file holds fewer Dense layers than its description")
    planned = []  # (layer, name, dataset, shape), every one checked before the first is read
    for k, (datasets, shapes) in enumerate(zip(layers_datasets, _shapes(model)), start=1):
        if len(datasets) != 2 or not all(hasattr(dataset, "shape") for _, dataset in datasets):
            raise UserError(f"{path}: Dense layer {k}'s weights are not one kernel and one bias")
        by_rank = sorted(datasets, key=lambda named: -len(named[1].shape))  # the kernel, then the bias
        for (name, dataset), shape in zip(by_rank, shapes):
            check_dataset(dataset, name, shape, path)
            planned.append((k, name, dataset, shape))
    for k, name, dataset, shape in planned:
        array = read_dataset(dataset, name, shape, path)
        if not np.isfinite(array).all():
            raise UserError(f"{path}: Dense layer {k}'s weights are not finite floating-point numbers")
        (model.kernels if len(shape) == 2 else model.biases).append(array.astype(np.float32))


def _optimizer(description, version: Tuple[int, int], saved: list, model: KerasModel,
               path: Path) -> Optional[KerasOptimizer]:
    """RMSprop's hyperparameters and, where saved, its square averages; None for another optimizer.

    The arithmetic is the RMSprop that wrote the file: Keras 3's, and tf.keras's since 2.11 (epsilon inside
    the square root), unless the file says its optimizer is the legacy one; Keras 2's before 2.11 (outside).
    A model compiled with ``optimizer="rmsprop"`` gets its Keras' default, as its ``.h5`` twin says."""
    if isinstance(description, str):
        description = {"class_name": description, "config": {}}
    if not isinstance(description, dict):
        return None
    kind = printable(str(description.get("class_name", "")).split(">")[-1])
    config = description.get("config") or {}
    if not isinstance(config, dict):
        raise UserError(f"{path}: the optimizer's config is not a JSON object")
    if kind.lower() != "rmsprop":
        model.notes.append(f"it was compiled with {kind or 'an unnamed optimizer'}, not RMSprop: the checkpoint "
                           "carries the weights and the reference's RMSprop settings")
        return None
    values = {"learning_rate": config.get("learning_rate", config.get("lr", 1e-3)), "rho": config.get("rho", 0.9),
              "epsilon": config.get("epsilon", 1e-7)}
    if any(isinstance(v, dict) for v in values.values()):
        model.notes.append("its RMSprop settings are not plain numbers (a schedule?): the checkpoint carries the "
                           "weights and the reference's RMSprop settings")
        return None
    for name, value in values.items():
        usable = type(value) in (int, float) and np.isfinite(value) and (
            0.0 <= value < 1.0 if name == "rho" else 0.0 < value <= FLOAT32_MAX)
        if not usable:
            wanted = "a number in [0, 1)" if name == "rho" else "a positive number that float32 holds"
            raise UserError(f"{path}: the RMSprop {name} is {printable(repr(value))}, not {wanted}")
    lr, rho, eps = (float(str(np.float32(v))) for v in values.values())  # Keras keeps them in float32
    legacy = config.get("is_legacy_optimizer")
    new_optimizer = version >= (3, 0) or legacy is False or (legacy is None and version >= (2, 11))
    optimizer = KerasOptimizer(lr, rho, eps, eps_placement="inside" if new_optimizer else "outside")
    if config.get("momentum") or config.get("centered"):
        optimizer.missing = "its RMSprop uses momentum or is centred, which torch_mnist's RMSprop does not"
        return optimizer
    _read_state(optimizer, saved, model, path)
    return optimizer


def _read_state(optimizer: KerasOptimizer, saved: list, model: KerasModel, path: Path) -> None:
    """The square averages (one per weight, in order) and the step count among the optimizer's datasets,
    each checked before it is read."""
    shapes = [shape for layer in _shapes(model) for shape in layer]
    averages = [(name, dataset) for name, dataset in saved if len(getattr(dataset, "shape", ())) > 0]
    scalars = [(name, dataset) for name, dataset in saved if len(getattr(dataset, "shape", (0,))) == 0]
    if not averages:
        optimizer.missing = "the file holds no optimizer state"
        return
    if [tuple(dataset.shape) for _, dataset in averages] != shapes:
        optimizer.missing = "its optimizer state does not match the model's weights"
        return
    arrays = [read_dataset(dataset, name, shape, path) for (name, dataset), shape in zip(averages, shapes)]
    if not all(np.isfinite(a).all() and (a >= 0).all() for a in arrays):
        optimizer.missing = "its optimizer state does not match the model's weights"
        return
    optimizer.square_avgs = [a.astype(np.float32) for a in arrays]
    # Keras 2 names its step count "iter" (or "iterations"); Keras 3's .keras stores it as the first scalar.
    named = [(name, dataset) for name, dataset in scalars if re.search("iter", name, re.I)]
    for name, dataset in (named or scalars)[:1]:
        if dataset.external or dataset.is_virtual or not np.issubdtype(dataset.dtype, np.integer):
            raise UserError(f"{path}: the optimizer's step count {printable(name)} holds {dataset.dtype}, "
                            "not an integer")
        count = int(dataset[()])
        if count < 0:
            raise UserError(f"{path}: the optimizer's step count {printable(name)} is {count}")
        optimizer.iterations = count
