"""torch_mnist: a faithful, fast PyTorch port of the classic Keras MNIST MLP.

The public names below load their modules on first use, so that the command
line (``scripts/*.py --help``, a mistyped flag) answers without importing torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "InMemoryBatches": "data.batches", "LoaderBatches": "data.batches", "TensorSplit": "data.batches",
    "decode": "data.batches", "make_batches": "data.batches",
    "build_model": "training.checkpoint", "load_checkpoint": "training.checkpoint",
    "save_checkpoint": "training.checkpoint",
    "TrainConfig": "config",
    "Normalization": "data.mnist", "load_mnist": "data.mnist",
    "resolve_data_root": "data.registry",
    "evaluate": "training.epoch", "train_one_epoch": "training.epoch",
    "CompiledStep": "training.compiled",
    "UserError": "errors",
    "new_history": "history", "record_epoch": "history",
    "Progress": "training.progress",
    "cross_entropy": "model.losses",
    "MLP": "model.mlp", "summary": "model.summary",
    "RMSprop": "model.optim",
    "Recipe": "recipe", "build": "recipe",
    "resolve_device": "training.runtime",
    "run_training": "training.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
