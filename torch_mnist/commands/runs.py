"""A saved run brought back for the reporting commands: its checkpoint's model and its test split."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

from ..data.batches import InMemoryBatches, decode
from ..training.checkpoint import build_model, checkpoint_config, load_checkpoint
from ..config import TrainConfig
from ..data.mnist import load_mnist
from ..data.registry import resolve_data_root
from ..recipe import normalization_of
from .common import class_names


@dataclass
class SavedRun:
    """A checkpoint brought back with the test set it was validated on."""

    config: TrainConfig
    history: dict
    model: torch.nn.Module
    test: object  # the torchvision test split (its raw pixels draw the mistakes grid)
    batches: InMemoryBatches

    @property
    def class_names(self) -> List[str]:
        return class_names(self.config.dataset)


def load_run(checkpoint_path: Path, data_dir: Optional[str], device: torch.device) -> SavedRun:
    """The checkpoint's model and its dataset's test split, normalized as in training."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint_config(checkpoint)
    test = load_mnist(resolve_data_root(data_dir), train=False, dataset=config.dataset)
    split = decode(test, normalization_of(config), device)
    # The run's own batch size, so the sums run in the same order as its validation did.
    return SavedRun(config, checkpoint["history"], build_model(checkpoint, device), test,
                    InMemoryBatches(split, config.batch_size))
