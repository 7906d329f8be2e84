"""Checkpoints: the format, safe loading (``weights_only``), validation, and restoring a run from one.

Format version 2 stores the configuration once (the model's architecture and
the input normalization derive from it) and a SHA-256 digest of everything it
holds. Version 1 files, which also stored those two and no digest, still load
when they agree with their configuration, with a note that they are unverified.
"""

import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config import KERAS_SEMANTICS, TrainConfig, learning_rate
from ..data.mnist import Normalization
from ..errors import Note, UserError
from ..files import atomic_write
from ..interrupts import signals_deferred
from ..history import HISTORY_KEYS, History
from .integrity import DIGEST_KEY, content_digest
from ..recipe import new_model
from ..model.mlp import IMAGE_PIXELS
from ..recipe import NUM_CLASSES, normalization_of, weight_shapes

FORMAT = "torch_mnist.checkpoint"  # what every checkpoint written so far says: never to change
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format", "format_version", "config", "epoch", "history", "model_state", "optimizer_state",
                 "rng_state", DIGEST_KEY)
VERSION_1_KEYS = ("architecture", "normalization")  # derived from the config since version 2


def make_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int,
                    history: History, generator: torch.Generator, rank_rng_states: Optional[dict] = None) -> dict:
    """A snapshot of the run after ``epoch``: tensors and plain Python values only.

    Tensors are copied, so the snapshot stays valid while training goes on. Under torchrun,
    ``rank_rng_states`` holds every rank's dropout streams (``{"torch": [...], "cuda": [...]}``).
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
        **({"rank_rng_states": rank_rng_states} if rank_rng_states is not None else {}),
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
    checkpoint = {**checkpoint, DIGEST_KEY: content_digest(checkpoint)}
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
        if path.suffix == ".pt":  # renamed: the checkpoint beside it has another name
            return "a JSON history (named like a checkpoint), not a checkpoint: pass the .pt file train.py wrote"
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
    required = REQUIRED_KEYS if version > 1 else tuple(k for k in REQUIRED_KEYS if k != DIGEST_KEY) + VERSION_1_KEYS
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if version == 1:
        warnings.warn(f"{path} was written by torch_mnist 0.1, without a digest: its contents cannot be "
                      "verified", Note, stacklevel=2)
    elif checkpoint[DIGEST_KEY] != content_digest(checkpoint):
        raise UserError(f"{path}: damaged: its contents differ from the digest recorded when it was saved "
                        "(overwritten or flipped bytes); use another copy")
    try:
        config = TrainConfig.from_dict(checkpoint["config"]).validate()
    except (UserError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: invalid configuration in checkpoint: {e}") from None
    if version == 1:
        checkpoint = _from_version_1(checkpoint, config, path)
    _check_weights(checkpoint["model_state"], config, path)
    _check_run_state(checkpoint, config, path)
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
    if not isinstance(stored, dict):
        raise UserError(f"{path}: model_state is a {type(stored).__name__}, not the model's weights by name")
    if set(stored) != set(expected):
        missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected), key=str)
        hidden = _few(list(config.hidden), 4)
        raise UserError(f"{path}: the weights do not match the configured model (hidden {hidden}): "
                        f"missing {_few(missing)}, unexpected {_few(unexpected)}")
    for name, shape in expected.items():
        tensor = stored[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{path}: {name} has shape {found}, but the configured model "
                            f"(hidden {list(config.hidden)}) needs {shape}")


def _check_run_state(checkpoint: dict, config: TrainConfig, path: Path) -> None:
    """Every field resume and the reports read later: epoch, history, optimizer state, generator states."""
    epoch = checkpoint["epoch"]
    if type(epoch) is not int or not 0 <= epoch <= config.epochs:
        raise UserError(f"{path}: epoch {epoch!r} is not a count of epochs between 0 and the run's {config.epochs}")
    history = checkpoint["history"]
    if not isinstance(history, dict) or any(
            not isinstance(history.get(key), list) or len(history[key]) != epoch
            or not all(type(v) in (int, float) and math.isfinite(v) for v in history[key]) for key in HISTORY_KEYS):
        raise UserError(f"{path}: the history is not {epoch} finite figures for each of {', '.join(HISTORY_KEYS)}")
    _check_optimizer_state(checkpoint["optimizer_state"], config, epoch, path)
    state_size = torch.Generator().get_state().numel()
    for key in ("rng_state", "torch_rng_state"):
        state = checkpoint.get(key, torch.Generator().get_state())  # torch_rng_state: absent in old files
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.shape != (state_size,):
            raise UserError(f"{path}: {key} is not a random generator's state")
    cuda_state = checkpoint.get("cuda_rng_state", torch.zeros(0, dtype=torch.uint8))
    if not _is_state(cuda_state):
        raise UserError(f"{path}: cuda_rng_state is not a random generator's state")
    per_rank = checkpoint.get("rank_rng_states", {"torch": [torch.Generator().get_state()]})
    if (not isinstance(per_rank, dict) or set(per_rank) - {"torch", "cuda"}
            or not all(isinstance(states, list) and states and all(map(_is_state, states))
                       for states in per_rank.values())):
        raise UserError(f"{path}: rank_rng_states is not a list of generator states per process")


def _is_state(state) -> bool:
    return isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1


def _check_optimizer_state(state, config: TrainConfig, epoch: int, path: Path) -> None:
    """RMSprop's ``state_dict``: one parameter group over the model's tensors, averages of their shapes."""
    shapes = list(weight_shapes(config).values())  # in the model's parameter order
    groups = state.get("param_groups") if isinstance(state, dict) else None
    group = groups[0] if isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict) else {}
    if group.get("params") != list(range(len(shapes))) or not isinstance(state.get("state"), dict):
        raise UserError(f"{path}: optimizer_state is not RMSprop's state for this model")
    # Loading an optimizer's state also loads its hyperparameters: they must be the configuration's (the
    # learning rate its schedule's at the saved epoch).
    expected = {"lr": learning_rate(config, max(epoch, 1)), "rho": config.rho, "eps": config.eps,
                "eps_placement": KERAS_SEMANTICS[config.keras_semantics]["eps_placement"]}
    if {key: group.get(key) for key in expected} != expected:
        raise UserError(f"{path}: optimizer_state's hyperparameters {({k: group.get(k) for k in expected})} "
                        f"differ from the configuration's {expected}")
    for index, entry in state["state"].items():
        average = entry.get("square_avg") if isinstance(entry, dict) else None
        if (type(index) is not int or not 0 <= index < len(shapes) or not isinstance(average, torch.Tensor)
                or tuple(average.shape) != shapes[index] or not average.is_floating_point()):
            raise UserError(f"{path}: optimizer_state holds no usable squared-gradient average for parameter "
                            f"{index!r}")


def _few(names: list, shown: int = 3) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(map(str, names[:shown])) + more


def checkpoint_config(checkpoint: dict) -> TrainConfig:
    return TrainConfig.from_dict(checkpoint["config"])


def checkpoint_normalization(checkpoint: dict) -> Normalization:
    return normalization_of(checkpoint_config(checkpoint))


def build_model(checkpoint: dict, device: Optional[torch.device] = None) -> nn.Module:
    """The checkpoint's model, rebuilt from the checkpoint alone, in eval mode."""
    model = new_model(checkpoint_config(checkpoint))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device or "cpu").eval()


def restore(checkpoint: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
            shuffle_generator: torch.Generator, device: torch.device, shard=None) -> History:
    """Put a checkpoint's run state back (weights, optimizer, shuffling and this rank's dropout
    streams); return its history. ``shard``: this rank under torchrun."""
    model.load_state_dict(checkpoint["model_state"])
    optimizer.load_state_dict(checkpoint["optimizer_state"])
    shuffle_generator.set_state(checkpoint["rng_state"])
    rank, world_size = (shard.rank, shard.world_size) if shard is not None else (0, 1)
    per_rank = checkpoint.get("rank_rng_states")
    if world_size > 1 and per_rank is not None:
        if len(per_rank["torch"]) != world_size:
            raise UserError(f"this checkpoint was written by {len(per_rank['torch'])} processes, each with its own "
                            f"dropout stream; resume it with --nproc_per_node {len(per_rank['torch'])}")
        torch.set_rng_state(per_rank["torch"][rank])
        if device.type == "cuda" and "cuda" in per_rank:
            torch.cuda.set_rng_state(per_rank["cuda"][rank], device)
    elif "torch_rng_state" in checkpoint:  # one process: rank 0's streams
        torch.set_rng_state(checkpoint["torch_rng_state"])
        if device.type == "cuda" and "cuda_rng_state" in checkpoint:
            torch.cuda.set_rng_state(checkpoint["cuda_rng_state"], device)
    return {key: list(values) for key, values in checkpoint["history"].items()}
