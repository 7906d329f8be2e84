"""The MNIST-like datasets, as data: names, folders, pixel statistics, class names, where the files live.

Nothing here imports torch, so the command line can offer these choices (and
answer ``--help``) without waiting for it.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ..errors import UserError

DATA_ENV_VAR = "TORCH_MNIST_DATA"
DEFAULT_DATA_ROOT = "./data"
MNIST_MEAN = 0.1307  # mean and std of the training pixels in [0, 1], as pytorch/examples use
MNIST_STD = 0.3081
CLASS_NAMES = [str(digit) for digit in range(10)]
NORMALIZATIONS = ("scale", "standardize")  # x / 255 (the reference), or the dataset's mean and std too


@dataclass(frozen=True)
class DatasetInfo:
    """An MNIST-like dataset: its torchvision class (by name), pixel statistics and class names."""

    torchvision_name: str  # torchvision.datasets.<name>, which reads <root>/<name>/raw
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    class_names: Tuple[str, ...]

    @property
    def folder(self) -> str:
        return self.torchvision_name


DATASETS = {
    "mnist": DatasetInfo("MNIST", MNIST_MEAN, MNIST_STD, tuple(CLASS_NAMES)),
    # Fashion-MNIST: measured on its 60,000 training images (0.28604, 0.35302); torchvision's class names.
    "fashion-mnist": DatasetInfo("FashionMNIST", 0.2860, 0.3530,
                                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot")),
    # KMNIST: the values its users commonly standardize with (files not on this machine to re-measure).
    "kmnist": DatasetInfo("KMNIST", 0.1918, 0.3483, ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_root(data_dir: Optional[str] = None) -> Path:
    """``--data-dir``, else ``$TORCH_MNIST_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT)
