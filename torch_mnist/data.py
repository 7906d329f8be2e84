"""MNIST from torchvision: locating the files, normalization, and batching."""

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Sampler
from torchvision import datasets, transforms

from . import idx
from .distributed import Shard
from .errors import UserError

DATA_ENV_VAR = "TORCH_MNIST_DATA"
DEFAULT_DATA_ROOT = "./data"
MNIST_MEAN = 0.1307  # mean and std of the training pixels in [0, 1], as pytorch/examples use
MNIST_STD = 0.3081
CLASS_NAMES = [str(digit) for digit in range(10)]


@dataclass(frozen=True)
class DatasetInfo:
    """An MNIST-like dataset: its torchvision class, pixel statistics and class names."""

    torchvision_class: type
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    class_names: tuple

    @property
    def folder(self) -> str:
        return self.torchvision_class.__name__  # torchvision reads <root>/<class name>/raw


DATASETS = {
    "mnist": DatasetInfo(datasets.MNIST, MNIST_MEAN, MNIST_STD, tuple(CLASS_NAMES)),
    # Fashion-MNIST: measured on its 60,000 training images (0.28604, 0.35302).
    "fashion-mnist": DatasetInfo(datasets.FashionMNIST, 0.2860, 0.3530, tuple(datasets.FashionMNIST.classes)),
    # KMNIST: the values its users commonly standardize with (files not on this machine to re-measure).
    "kmnist": DatasetInfo(datasets.KMNIST, 0.1918, 0.3483, tuple(datasets.KMNIST.classes)),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


Batch = Tuple[torch.Tensor, torch.Tensor]


def resolve_data_root(data_dir: Optional[str] = None) -> Path:
    """``--data-dir``, else ``$TORCH_MNIST_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model inputs: ``(pixel / 255 - mean) / std``."""

    name: str
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def named(cls, name: str, dataset: str = "mnist") -> "Normalization":
        """``scale`` (the reference: x / 255) or ``standardize`` with ``dataset``'s statistics."""
        if name == "scale":
            return cls("scale")
        if name == "standardize":
            info = dataset_info(dataset)
            return cls("standardize", info.mean, info.std)
        raise UserError(f"unknown normalization {name!r}; choose scale or standardize")

    def per_image_transform(self) -> transforms.Compose:
        """The torchvision transform for one PIL image -> (1, 28, 28) float tensor."""
        steps = [transforms.ToTensor()]
        if self.name != "scale":
            steps.append(transforms.Normalize((self.mean,), (self.std,)))
        return transforms.Compose(steps)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """The same arithmetic as :meth:`per_image_transform` on a whole uint8 tensor.

        Bit-for-bit equal to the per-image path (the tests check it): the same
        float32 division by 255, then the same in-place subtract and divide.
        """
        x = pixels.to(torch.float32, copy=True).div_(255)  # in place: no second 188 MB copy
        if self.name != "scale":
            x.sub_(torch.as_tensor(self.mean)).div_(torch.as_tensor(self.std))
        return x

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": self.mean, "std": self.std}


def raw_folder(root: Path, dataset: str = "mnist") -> Path:
    """Where torchvision looks for a dataset's four idx files."""
    return Path(root) / dataset_info(dataset).folder / "raw"


def load_mnist(root: Path, train: bool, transform=None, download: bool = True,
               dataset: str = "mnist") -> datasets.MNIST:
    """A torchvision split of MNIST (or ``dataset``), after validating its raw files.

    Downloads only when the files are absent; when that fails (e.g. offline),
    raises :class:`UserError` naming the folder searched and the files expected.
    """
    root, folder = Path(root), raw_folder(root, dataset)
    if not all((folder / name).exists() for name in idx.RAW_FILES):
        _download(root, folder, download, dataset)
    idx.check_split(folder, "train" if train else "test")
    return dataset_info(dataset).torchvision_class(str(root), train=train, transform=transform, download=False)


def _download(root: Path, folder: Path, allowed: bool, dataset: str) -> None:
    info = dataset_info(dataset)
    missing = (f"{info.folder} files not found in {folder} (expected {', '.join(idx.RAW_FILES)}); "
               f"point --data-dir or ${DATA_ENV_VAR} at the folder that contains {info.folder}/raw")
    if not allowed:
        raise UserError(missing)
    created = [p for p in (root, root / info.folder, folder) if not p.exists()]
    try:
        info.torchvision_class(str(root), train=True, download=True)
    except Exception as e:  # torchvision raises RuntimeError/URLError/OSError variously
        for folder in reversed(created):  # leave no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UserError(f"{missing}; download failed: {reason}") from None


@dataclass
class TensorSplit:
    """A whole split decoded once: images (N, 784) float32 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def decode(dataset: datasets.MNIST, normalization: Normalization, device: torch.device) -> TensorSplit:
    """Decode a torchvision split into tensors on ``device`` with one normalization pass."""
    images = normalization.apply(dataset.data).flatten(1)  # (N, 28, 28) uint8 -> (N, 784) float32
    return TensorSplit(images.to(device), dataset.targets.to(device))


def epoch_permutation(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's shuffled order, drawn on the CPU so it does not depend on the device."""
    return torch.randperm(num_samples, generator=generator)


class InMemoryBatches:
    """Batches sliced from a :class:`TensorSplit` resident on its device.

    With a generator, each iteration draws a new permutation (Keras'
    ``shuffle=True``); without one, batches come in order (evaluation).
    """

    def __init__(self, split: TensorSplit, batch_size: int, generator: Optional[torch.Generator] = None,
                 shard: Shard = Shard()):
        self.split = split
        self.batch_size = batch_size
        self.generator = generator
        self.shard = shard  # under torchrun, this rank's share of each global batch
        self.num_samples = len(split)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        images, labels = self.split.images, self.split.labels
        if self.generator is None:
            for start in range(0, self.num_samples, self.batch_size):
                yield images[start:start + self.batch_size], labels[start:start + self.batch_size]
            return
        order = epoch_permutation(self.num_samples, self.generator).to(images.device, non_blocking=True)
        for start in range(0, self.num_samples, self.batch_size):
            batch = self.shard.of(order[start:start + self.batch_size])
            yield images.index_select(0, batch), labels.index_select(0, batch)


class PermutationBatchSampler(Sampler):
    """Index batches from :func:`epoch_permutation` (or in order without a generator).

    Draws from the generator exactly as :class:`InMemoryBatches` does, so both
    data paths see the same batches in the same order for the same seed.
    """

    def __init__(self, num_samples: int, batch_size: int, generator: Optional[torch.Generator] = None,
                 shard: Shard = Shard()):
        self.num_samples, self.batch_size, self.generator = num_samples, batch_size, generator
        self.shard = shard

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[list]:
        if self.generator is None:
            order = torch.arange(self.num_samples)
        else:
            order = epoch_permutation(self.num_samples, self.generator)
        for start in range(0, self.num_samples, self.batch_size):
            yield self.shard.of(order[start:start + self.batch_size]).tolist()


class LoaderBatches:
    """The per-image path: a ``DataLoader`` over a dataset with a transform."""

    def __init__(self, dataset, batch_size: int, device: torch.device,
                 generator: Optional[torch.Generator] = None, num_workers: int = 0, shard: Shard = Shard()):
        self.sampler = PermutationBatchSampler(len(dataset), batch_size, generator, shard)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=device.type == "cuda")
        self.device = device
        self.generator = generator
        self.num_samples = len(dataset)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_batches(root: Path, train: bool, normalization: Normalization, batch_size: int,
                 device: torch.device, loader: str = "memory",
                 generator: Optional[torch.Generator] = None, dataset: str = "mnist", shard: Shard = Shard()):
    """The batches of one split through the chosen data path ("memory" or "dataloader")."""
    if loader == "memory":
        split = decode(load_mnist(root, train, dataset=dataset), normalization, device)
        return InMemoryBatches(split, batch_size, generator, shard)
    images = load_mnist(root, train, transform=normalization.per_image_transform(), dataset=dataset)
    return LoaderBatches(images, batch_size, device, generator, shard=shard)
