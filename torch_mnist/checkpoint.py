"""Checkpoints: atomic writes, safe loading (``weights_only``), validation."""

import contextlib
import json
import os
import pickle
import signal
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from .config import TrainConfig
from .data import Normalization
from .errors import UserError
from .model import MLP

FORMAT = "torch_mnist.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "architecture", "config", "normalization", "epoch",
                 "history", "model_state", "optimizer_state", "rng_state")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them as usual.

    An exception raised inside ``torch.save`` can leave its zip writer broken
    and raising errors of its own; deferring keeps a write whole. Only the
    main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])  # now handled by the restored handler


def atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` so that a crash at any moment leaves the old file or the new one.

    ``write(f)`` fills a temporary file in the same folder, which is flushed,
    fsynced and renamed over ``path`` (``os.replace`` is atomic on POSIX).
    Ctrl-C and SIGTERM wait until the write is complete.
    """
    with signals_deferred():
        _write_and_rename(Path(path), write)


def _write_and_rename(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def make_checkpoint(model: MLP, optimizer: torch.optim.Optimizer, config: TrainConfig,
                    normalization: Normalization, epoch: int, history: dict,
                    generator: torch.Generator) -> dict:
    """A snapshot of the run after ``epoch``: tensors and plain Python values only.

    Tensors are copied, so the snapshot stays valid while training goes on.
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture(),
        "config": config.to_dict(),
        "normalization": normalization.to_dict(),
        "epoch": epoch,
        "history": {key: list(values) for key, values in history.items()},
        "model_state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer_state": _copy_to_cpu(optimizer.state_dict()),
        "rng_state": generator.get_state(),  # the shuffling generator, so resume reshuffles the same
        "torch_rng_state": torch.get_rng_state(),  # dropout's generator
        **({"cuda_rng_state": torch.cuda.get_rng_state(next(model.parameters()).device)}
           if next(model.parameters()).is_cuda else {}),
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
    summary = {key: checkpoint[key] for key in ("epoch", "config", "normalization", "history")}
    with signals_deferred():
        atomic_write(path, lambda f: torch.save(checkpoint, f))
        atomic_write(history_path(path), lambda f: f.write(json.dumps(summary, indent=2).encode() + b"\n"))


def history_path(checkpoint_path: Path) -> Path:
    """``ckpt.pt`` -> ``ckpt.json``: where the history is written beside a checkpoint."""
    return Path(checkpoint_path).with_suffix(".json")


def load_checkpoint(path: Path) -> dict:
    """Read and validate a checkpoint; raise :class:`UserError` for anything unusable.

    Uses ``torch.load(weights_only=True)``: a file that would run code when
    unpickled is refused before any of that code runs.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise UserError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4" from foreign files: the error says it all
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # the unpickler met an importable object (a function, a class)
            raise UserError(f"{path}: refused: it holds Python objects that could run code when loaded; "
                            "torch_mnist checkpoints hold only tensors and plain values") from None
        raise UserError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
    except Exception as e:  # a file of arbitrary bytes can fail the unpickler in many ways
        raise UserError(f"{path}: not a readable checkpoint; the file is truncated, corrupted or "
                        f"not a torch file ({_first_line(e)})") from None
    validate_checkpoint(checkpoint, path)
    return checkpoint


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def validate_checkpoint(checkpoint, path: Path) -> None:
    """Check format, version, keys, and every weight's shape against the recorded architecture."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a torch_mnist checkpoint")
    version = checkpoint.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {version!r} is not supported "
                        f"(this torch_mnist reads up to {FORMAT_VERSION}); upgrade torch_mnist")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        TrainConfig.from_dict(checkpoint["config"]).validate()
        Normalization(**checkpoint["normalization"])
    except (UserError, TypeError) as e:
        raise UserError(f"{path}: invalid configuration in checkpoint: {e}") from None
    try:
        expected = MLP(**checkpoint["architecture"]).state_dict()
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: unusable architecture {checkpoint['architecture']!r} ({e})") from None
    stored = checkpoint["model_state"]
    if not isinstance(stored, dict) or set(stored) != set(expected):
        raise UserError(f"{path}: weights {sorted(stored) if isinstance(stored, dict) else stored!r} "
                        f"do not match the recorded architecture's {sorted(expected)}")
    for name, tensor in expected.items():
        if not isinstance(stored[name], torch.Tensor) or stored[name].shape != tensor.shape:
            shape = tuple(stored[name].shape) if isinstance(stored[name], torch.Tensor) else type(stored[name])
            raise UserError(f"{path}: {name} has shape {shape}, but the recorded architecture "
                            f"needs {tuple(tensor.shape)}")


def build_model(checkpoint: dict, device: Optional[torch.device] = None) -> nn.Module:
    """The checkpoint's model, rebuilt from the checkpoint alone, in eval mode."""
    model = MLP(**checkpoint["architecture"])
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device or "cpu").eval()


def checkpoint_normalization(checkpoint: dict) -> Normalization:
    return Normalization(**checkpoint["normalization"])
