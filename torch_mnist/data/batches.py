"""Batches of a decoded split: in memory on the device (the fast path) or through a DataLoader."""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Sampler
from torchvision import datasets

from .mnist import Normalization, load_mnist
from ..distributed import Shard

Batch = Tuple[torch.Tensor, torch.Tensor]


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
        for batch in self.index_batches():
            yield images.index_select(0, batch), labels.index_select(0, batch)

    def index_batches(self) -> Iterator[torch.Tensor]:
        """Each shuffled batch's row indices on the split's device (this rank's share under torchrun)."""
        order = epoch_permutation(self.num_samples, self.generator).to(self.split.images.device, non_blocking=True)
        for start in range(0, self.num_samples, self.batch_size):
            yield self.shard.of(order[start:start + self.batch_size])


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
        self.num_samples = len(dataset)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Batch]:
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_batches(root: Path, normalization: Normalization, *, train: bool, batch_size: int, device: torch.device,
                 loader: str = "memory", generator: Optional[torch.Generator] = None, dataset: str = "mnist",
                 shard: Shard = Shard()):
    """The batches of one split through the chosen data path (``config.LOADERS``: "memory" or "dataloader");
    shuffled by ``generator`` where one is given (training), in order otherwise."""
    if loader == "memory":
        split = decode(load_mnist(root, train, dataset=dataset), normalization, device)
        return InMemoryBatches(split, batch_size, generator, shard)
    images = load_mnist(root, train, transform=normalization.per_image_transform(), dataset=dataset)
    return LoaderBatches(images, batch_size, device, generator, shard=shard)
