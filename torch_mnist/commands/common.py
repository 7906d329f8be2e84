"""What every command shares: running a ``main``, its flags, output checks, and a saved run reloaded."""

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

from ..batches import InMemoryBatches, decode
from ..checkpoint import build_model, checkpoint_config, load_checkpoint
from ..config import TrainConfig
from ..data import dataset_info, load_mnist, resolve_data_root
from ..errors import UserError
from ..recipe import normalization_of

Main = Callable[[Optional[List[str]]], int]


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit status 143 instead of 130)."""


def raise_terminated(signum, frame):
    raise Terminated()


def run_main(main: Main, argv: Optional[List[str]] = None) -> int:
    """Run a command's ``main``: a :class:`UserError` becomes one stderr line and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # outside training (which reports its own): nothing to keep
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def script(main: Main) -> None:
    """The body of ``if __name__ == "__main__"`` for scripts: run and exit with the status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_main(main))


def data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $TORCH_MNIST_DATA, else ./data)")


def device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def check_output_path(path: Path, flag: str = "--out") -> None:
    """Reject an output path that could not be written, before any work starts."""
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file path such as {path / 'ckpt.pt'}")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: folder {folder} is not writable ({e.strerror})") from None


def class_names(config: TrainConfig) -> List[str]:
    return list(dataset_info(config.dataset).class_names)


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
        return class_names(self.config)


def load_run(checkpoint_path: Path, data_dir: Optional[str], device: torch.device) -> SavedRun:
    """The checkpoint's model and its dataset's test split, normalized as in training."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint_config(checkpoint)
    test = load_mnist(resolve_data_root(data_dir), train=False, dataset=config.dataset)
    split = decode(test, normalization_of(config), device)
    # The run's own batch size, so the sums run in the same order as its validation did.
    return SavedRun(config, checkpoint["history"], build_model(checkpoint, device), test,
                    InMemoryBatches(split, config.batch_size))
