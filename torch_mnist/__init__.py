"""torch_mnist: a faithful, fast PyTorch port of the classic Keras MNIST MLP."""

from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import InMemoryBatches, LoaderBatches, Normalization, TensorSplit, decode, load_mnist, make_batches
from .engine import evaluate, fit, new_history, train_one_epoch
from .errors import UserError
from .losses import cross_entropy
from .model import MLP
from .optim import RMSprop
from .runtime import resolve_device
from .training import run_training

__version__ = "0.1.0"

__all__ = [
    "MLP", "RMSprop", "TrainConfig", "UserError", "Normalization", "TensorSplit", "InMemoryBatches",
    "LoaderBatches", "build_model", "cross_entropy", "decode", "evaluate", "fit", "load_checkpoint",
    "load_mnist", "make_batches", "new_history", "resolve_device", "run_training", "save_checkpoint",
    "train_one_epoch",
]
