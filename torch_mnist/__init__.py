"""torch_mnist: a faithful, fast PyTorch port of the classic Keras MNIST MLP.

The public names below load their modules on first use, so that the command
line (``scripts/*.py --help``, a mistyped flag) answers without importing torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "InMemoryBatches": "batches", "LoaderBatches": "batches", "TensorSplit": "batches", "decode": "batches",
    "make_batches": "batches",
    "build_model": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "TrainConfig": "config",
    "Normalization": "data", "load_mnist": "data",
    "resolve_data_root": "datasets",
    "evaluate": "engine", "fit": "engine", "train_one_epoch": "engine",
    "UserError": "errors",
    "new_history": "history",
    "cross_entropy": "losses",
    "MLP": "model",
    "RMSprop": "optim",
    "Recipe": "recipe", "build": "recipe",
    "resolve_device": "runtime",
    "run_training": "training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
