"""Checkpoints: the format, safe loading (``weights_only``), validation, and restoring a run from one.

Format version 2 stores the configuration once; the model's architecture and
the input normalization derive from it. Version 1 files, which also stored
those two, still load when they agree with their configuration.
"""

import json
import pickle
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .config import TrainConfig
from .data import Normalization
from .errors import UserError
from .files import atomic_write, signals_deferred
from .history import HISTORY_KEYS, History
from .recipe import build_model as build_configured_model
from .model import IMAGE_PIXELS
from .recipe import NUM_CLASSES, normalization_of, weight_shapes

FORMAT = "torch_mnist.checkpoint"
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format", "format_version", "config", "epoch", "history", "model_state", "optimizer_state",
                 "rng_state")
VERSION_1_KEYS = ("architecture", "normalization")  # derived from the config since version 2


def make_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int,
                    history: History, generator: torch.Generator) -> dict:
    """A snapshot of the run after ``epoch``: tensors and plain Python values only.

    Tensors are copied, so the snapshot stays valid while training goes on.
    """
    device = next(model.parameters()).device
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "epoch": epoch,
        "history": {key: list(values) for key, values in history.items()},
        "model_state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer_state": _copy_to_cpu(optimizer.state_dict()),
        "rng_state": generator.get_state(),  # the shuffling generator, so resume reshuffles the same
        "torch_rng_state": torch.get_rng_state(),  # dropout's generator
        **({"cuda_rng_state": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
    }


def _copy_to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copy_to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_to_cpu(v) for v in value)
    return value


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Atomically write ``checkpoint`` to ``path`` and its history to ``path`` with ``.json``.

    A signal waits for both files, so the two never describe different epochs.
    """
    summary = {key: checkpoint[key] for key in ("epoch", "config", "history")}
    with signals_deferred():
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        atomic_write(history_path(path), lambda f: f.write(json.dumps(summary, indent=2).encode() + b"\n"))


def history_path(checkpoint_path: Path) -> Path:
    """``ckpt.pt`` -> ``ckpt.json``: where the history is written beside a checkpoint."""
    return Path(checkpoint_path).with_suffix(".json")


def load_checkpoint(path: Path) -> dict:
    """Read and validate a checkpoint; raise :class:`UserError` for anything unusable.

    Uses ``torch.load(weights_only=True)``: a file that would run code when
    unpickled is refused before any of that code runs. Returns the checkpoint
    in the current format's shape (a version 1 file loses its derived keys).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise UserError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a checkpoint")
    kind = _sniff(path)
    if kind != "torch":
        raise UserError(f"{path}: {kind}")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4" from foreign files: the error says it all
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # the unpickler met an importable object (a function, a class)
            raise UserError(f"{path}: refused: it holds Python objects that could run code when loaded; "
                            "torch_mnist checkpoints hold only tensors and plain values") from None
        raise UserError(f"{path}: not a readable checkpoint: it holds something other than tensors and "
                        "plain values") from None
    except Exception:  # torch's zip reader explains at length; what matters is that the file is damaged
        raise UserError(f"{path}: not a readable checkpoint: the file is truncated or corrupted") from None
    return validate_checkpoint(checkpoint, path)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle, protocol 2 or later


def _sniff(path: Path) -> str:
    """``"torch"`` for a file torch could have written, else what the file is, said for a person."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    if head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC):
        return "torch"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a readable checkpoint: neither a torch file nor text"
    if text.lstrip().startswith("{") and '"history"' in text:
        return (f"a JSON history, not a checkpoint: pass {path.with_suffix('.pt')}, the checkpoint "
                "written beside it")
    return "a text file, not a checkpoint: pass the .pt file that train.py writes"


def validate_checkpoint(checkpoint, path: Path) -> dict:
    """Check format, version, keys, configuration, and every weight's shape; return the checkpoint.

    The expected shapes come from the configuration alone, so a crafted file
    cannot make us allocate a model before its weights are known to fit.
    """
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a torch_mnist checkpoint")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {version!r} is not supported "
                        f"(this torch_mnist reads 1 to {FORMAT_VERSION}); upgrade torch_mnist")
    missing = [key for key in REQUIRED_KEYS + (VERSION_1_KEYS if version == 1 else ()) if key not in checkpoint]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        config = TrainConfig.from_dict(checkpoint["config"]).validate()
    except (UserError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: invalid configuration in checkpoint: {e}") from None
    if version == 1:
        checkpoint = _from_version_1(checkpoint, config, path)
    _check_weights(checkpoint["model_state"], config, path)
    history = checkpoint["history"]
    if not isinstance(history, dict) or any(not isinstance(history.get(key), list) for key in HISTORY_KEYS):
        raise UserError(f"{path}: the history is not a list of figures per metric")
    return checkpoint


def _from_version_1(checkpoint: dict, config: TrainConfig, path: Path) -> dict:
    """A version 1 checkpoint's derived keys must agree with its configuration; then they go."""
    stored_architecture = checkpoint["architecture"]
    derived = {"in_features": IMAGE_PIXELS, "hidden": list(config.hidden), "num_classes": NUM_CLASSES,
               "dropout": config.dropout}
    hidden = stored_architecture.get("hidden") if isinstance(stored_architecture, dict) else None
    if not isinstance(stored_architecture, dict) or {**stored_architecture, "hidden": _as_list(hidden)} != derived:
        raise UserError(f"{path}: its architecture {stored_architecture!r} disagrees with its configuration "
                        f"{derived}")
    if checkpoint["normalization"] != normalization_of(config).to_dict():
        raise UserError(f"{path}: its normalization {checkpoint['normalization']!r} disagrees with its "
                        f"configuration ({config.normalize}, {config.dataset})")
    return {key: value for key, value in checkpoint.items() if key not in VERSION_1_KEYS}


def _as_list(hidden):
    """Version 1 wrote ``hidden`` as an int or a list."""
    return [hidden] if isinstance(hidden, int) else list(hidden) if isinstance(hidden, (list, tuple)) else hidden


def _check_weights(stored, config: TrainConfig, path: Path) -> None:
    expected = weight_shapes(config)
    if not isinstance(stored, dict) or set(stored) != set(expected):
        raise UserError(f"{path}: weights {sorted(stored) if isinstance(stored, dict) else type(stored).__name__} "
                        f"do not match the configured model's {sorted(expected)}")
    for name, shape in expected.items():
        tensor = stored[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{path}: {name} has shape {found}, but the configured model "
                            f"(hidden {list(config.hidden)}) needs {shape}")


def checkpoint_config(checkpoint: dict) -> TrainConfig:
    return TrainConfig.from_dict(checkpoint["config"])


def checkpoint_normalization(checkpoint: dict) -> Normalization:
    return normalization_of(checkpoint_config(checkpoint))


def build_model(checkpoint: dict, device: Optional[torch.device] = None) -> nn.Module:
    """The checkpoint's model, rebuilt from the checkpoint alone, in eval mode."""
    model = build_configured_model(checkpoint_config(checkpoint))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device or "cpu").eval()


def restore(checkpoint: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
            shuffle_generator: torch.Generator, device: torch.device) -> History:
    """Put a checkpoint's run state back (weights, optimizer, shuffling and dropout streams); return its history."""
    model.load_state_dict(checkpoint["model_state"])
    optimizer.load_state_dict(checkpoint["optimizer_state"])
    shuffle_generator.set_state(checkpoint["rng_state"])
    if "torch_rng_state" in checkpoint:  # dropout's stream
        torch.set_rng_state(checkpoint["torch_rng_state"])
        if device.type == "cuda" and "cuda_rng_state" in checkpoint:
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"], device)
    return {key: list(values) for key, values in checkpoint["history"].items()}
