"""The training configuration; its defaults are the reference Keras run's."""

import math
from dataclasses import asdict, dataclass, fields
from typing import Tuple, Union

from .data.registry import DATASETS, NORMALIZATIONS
from .errors import UserError

DATASET_NAMES = tuple(DATASETS)
# Bounds on what a configuration (a flag, or a checkpoint from anywhere) may ask for.
MAX_COUNT = 10 ** 9  # epochs, batch size
MAX_LAYERS, MAX_UNITS = 64, 65536  # hidden layers and their widths: 64 x 65536^2 floats is already ~1 TB
MAX_SEED = 2 ** 64 - 1  # torch.manual_seed's range
LOADERS = ("memory", "dataloader")  # decoded tensors on the device, or a DataLoader with a per-image transform

# Which optimizer and loss arithmetic each Keras generation uses.
# keras2: legacy RMSprop, eps added outside the square root (as torch.optim.RMSprop),
#         cross-entropy straight from the logits.
# keras3: eps inside the square root, softmax probabilities clipped to [1e-7, 1 - 1e-7].
KERAS_SEMANTICS = {
    "keras2": {"eps_placement": "outside", "clip_probabilities": False},
    "keras3": {"eps_placement": "inside", "clip_probabilities": True},
}

# --distort: the training digits redrawn each epoch (data/distort.py); --lr-schedule: the learning rate by epoch.
DISTORTIONS = ("affine", "elastic", "pen")
LR_SCHEDULES = ("constant", "cosine")

# --amp: off (float32) or bf16 (training forward passes under bfloat16 autocast; see recipe.AUTOCAST_DTYPES).
AMP_MODES = ("off", "bf16")


@dataclass
class TrainConfig:
    """Everything that decides a training run's result.

    Stored in every checkpoint as a plain dict, so a checkpoint alone
    rebuilds its model and continues its run.
    """

    epochs: int = 20
    batch_size: int = 128  # 469 steps per epoch; the last batch holds 96 images
    lr: float = 1e-3  # Keras RMSprop default; torch's RMSprop defaults to 1e-2
    rho: float = 0.9  # Keras RMSprop default; torch's alpha defaults to 0.99
    eps: float = 1e-7  # Keras' epsilon; torch's RMSprop defaults to 1e-8
    hidden: Tuple[int, ...] = (512,)  # one Dense(512); (512, 512) is Keras' mnist_mlp example
    dropout: Union[float, Tuple[float, ...]] = 0.0  # after each hidden layer (or one rate each); mnist_mlp: 0.2
    seed: int = 0
    dataset: str = "mnist"  # or fashion-mnist, kmnist (torchvision's classes, same file format)
    normalize: str = "scale"  # the reference divides by 255; "standardize" as pytorch/examples
    loader: str = "memory"  # decoded tensors on the device; "dataloader" = per-image transform
    # keras2 matches the reference's logged curves (docs/faithfulness.md).
    keras_semantics: str = "keras2"
    # Beyond the reference (make train-robust): distorted training digits and a decaying learning rate.
    distort: Tuple[str, ...] = ()  # any of DISTORTIONS; () trains on MNIST's digits as they are
    lr_schedule: str = "constant"  # "cosine": lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2 for each epoch
    # Speed options; neither changes the formula, only its rounding (docs/performance.md):
    compile: bool = True  # each training step one torch.compile graph (eager where it cannot be built)
    amp: str = "off"  # "bf16": training forward passes under bfloat16 autocast

    def __post_init__(self):
        # Accept an int or any sequence (JSON gives lists); keep a tuple. Anything else is left for validate().
        if isinstance(self.hidden, int):
            self.hidden = (self.hidden,)
        elif isinstance(self.hidden, (list, tuple)):
            self.hidden = tuple(self.hidden)
        if isinstance(self.distort, (list, tuple)):
            self.distort = tuple(self.distort)
        if isinstance(self.dropout, (list, tuple)):
            self.dropout = tuple(self.dropout)

    def validate(self) -> "TrainConfig":
        """Raise :class:`UserError` for a value no run could use (of any type); return self."""
        for name in ("epochs", "batch_size"):
            _check_int(name, getattr(self, name), 1, MAX_COUNT)
        if not self.hidden or len(self.hidden) > MAX_LAYERS or any(
                type(h) is not int or not 1 <= h <= MAX_UNITS for h in self.hidden):
            raise UserError(f"--hidden must be 1 to {MAX_LAYERS} layer widths from 1 to {MAX_UNITS}, "
                            f"got {list(self.hidden)}")
        _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("lr", "eps"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise UserError(f"--{name} must be a positive number, got {value!r}")
        for name in ("dropout", "rho"):
            value = getattr(self, name)
            if name == "dropout" and isinstance(value, tuple):
                if len(value) != len(self.hidden) or not all(_is_number(v) and 0.0 <= v < 1.0 for v in value):
                    raise UserError(f"--dropout must be one rate in [0, 1), or one for each of the "
                                    f"{len(self.hidden)} hidden layers, got {list(value)}")
            elif not _is_number(value) or not 0.0 <= value < 1.0:
                raise UserError(f"--{name} must be in [0, 1), got {value!r}")
        _check_choice("dataset", self.dataset, DATASET_NAMES)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        _check_choice("loader", self.loader, LOADERS)
        _check_choice("keras-semantics", self.keras_semantics, tuple(KERAS_SEMANTICS))
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("lr-schedule", self.lr_schedule, LR_SCHEDULES)
        if not isinstance(self.distort, tuple) or len(set(self.distort)) != len(self.distort) or any(
                not isinstance(kind, str) or kind not in DISTORTIONS for kind in self.distort):
            raise UserError(f"--distort takes distinct names from {', '.join(DISTORTIONS)}, got {self.distort!r}")
        if self.distort and self.loader != "memory":
            raise UserError("--distort draws its digits from the decoded tensors: use it with --loader memory")
        if not isinstance(self.compile, bool):
            raise UserError(f"compile must be true or false, got {self.compile!r}")
        return self

    def to_dict(self) -> dict:
        values = asdict(self)
        values["hidden"] = list(self.hidden)  # the same in a checkpoint and in its JSON
        values["distort"] = list(self.distort)
        if isinstance(self.dropout, tuple):
            values["dropout"] = list(self.dropout)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Rebuild from :meth:`to_dict`; keys this version does not know are an error."""
        if not isinstance(values, dict):
            raise UserError(f"a configuration is a mapping of settings, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown configuration keys {unknown}; was this written by a newer torch_mnist?")
        return cls(**values)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine":
        return config.lr * (1 + math.cos(math.pi * (epoch - 1) / config.epochs)) / 2
    return config.lr


def _is_number(value) -> bool:
    return type(value) in (int, float)  # not bool, not a string


def _check_int(name: str, value, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise UserError(f"--{name.replace('_', '-')} must be an integer from {low} to {high}, got {value!r}")


def _check_choice(flag: str, value: str, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"--{flag} must be one of {', '.join(choices)}, got {value!r}")
