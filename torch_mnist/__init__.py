"""torch_mnist: a faithful, fast PyTorch port of the classic Keras MNIST MLP."""

from .batches import InMemoryBatches, LoaderBatches, TensorSplit, decode, make_batches
from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Normalization, load_mnist, resolve_data_root
from .engine import evaluate, fit, train_one_epoch
from .errors import UserError
from .history import new_history
from .losses import cross_entropy
from .model import MLP
from .optim import RMSprop
from .recipe import Recipe, build
from .runtime import resolve_device
from .training import run_training

__version__ = "0.1.0"

__all__ = [
    "MLP", "RMSprop", "Recipe", "TrainConfig", "UserError", "Normalization", "TensorSplit", "InMemoryBatches",
    "LoaderBatches", "build", "build_model", "cross_entropy", "decode", "evaluate", "fit", "load_checkpoint",
    "load_mnist", "make_batches", "new_history", "resolve_data_root", "resolve_device", "run_training",
    "save_checkpoint", "train_one_epoch",
]
