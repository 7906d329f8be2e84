"""Run logs that the field's tools read: a Keras ``CSVLogger`` file and TensorBoard event files.

Both are written by rank 0 only, after each epoch, and continue the same run on
``--resume``: the CSV gets the epochs it lacks (never one twice), TensorBoard
picks up at the resumed step and drops whatever a crashed run had written past it.
"""

import csv
import json
import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..errors import UserError
from ..history import HISTORY_KEYS

# Keras' CSVLogger writes "epoch" then the logs' keys in sorted order, epochs counted from 0.
CSV_HEADER = ["epoch", *sorted(HISTORY_KEYS)]
TENSORBOARD_HINT = "TensorBoard is not installed; pip install -e '.[tensorboard]' to write --tensorboard logs"


class RunLog:
    """What the epoch loop tells a log: where the run starts, and each finished epoch."""

    def start(self, model: torch.nn.Module, config: dict, done_epochs: int, steps_per_epoch: int) -> None:
        """Before the first epoch of this process (``done_epochs`` > 0 when resuming)."""

    def epoch_end(self, epoch: int, figures: Dict[str, float], learning_rate: float, seconds: float,
                  step_losses: torch.Tensor) -> None:
        """After ``epoch`` (counted from 1): its four figures, and each training step's loss."""

    def close(self) -> None:
        pass


class CsvLog(RunLog):
    """One row per epoch in Keras ``CSVLogger``'s format, flushed to disk as each epoch ends."""

    def __init__(self, path: Path, resuming: bool):
        self.path, self.resuming = Path(path), resuming
        self.logged: set = set()

    def check(self) -> None:
        """Before any work: the file can be written, and (resuming) it is this run's, or (new run) absent."""
        existing = self._rows()
        if existing is not None and not self.resuming and existing:
            raise UserError(f"--log-csv {self.path}: already holds another run's log; give a new path, or "
                            "--resume the run it belongs to")
        try:
            with open(self.path, "a", newline=""):
                pass
        except OSError as e:
            raise UserError(f"--log-csv {self.path}: cannot be written ({e.strerror})") from None
        self.logged = {int(row["epoch"]) for row in existing or []}

    def _rows(self) -> Optional[List[dict]]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return None
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != CSV_HEADER:
                    raise UserError(f"--log-csv {self.path}: its columns {reader.fieldnames} are not this run's "
                                    f"{CSV_HEADER}; refusing to mix two runs in one file")
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error):
            raise UserError(f"--log-csv {self.path}: exists and is not a CSV log (binary or malformed); give "
                            "a new path") from None
        if any(not row["epoch"].isdigit() for row in rows):
            raise UserError(f"--log-csv {self.path}: not a CSV log of epochs")
        return rows

    def epoch_end(self, epoch, figures, learning_rate, seconds, step_losses) -> None:
        if epoch - 1 in self.logged:  # a resumed run re-reaching an epoch the file has
            return
        new_file = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(CSV_HEADER)
            writer.writerow([epoch - 1, *(figures[key] for key in CSV_HEADER[1:])])
            f.flush()
            os.fsync(f.fileno())  # readable mid-run, whole rows only
        self.logged.add(epoch - 1)


class TensorBoardLog(RunLog):
    """Scalars per epoch (the four figures, learning rate, seconds per epoch) and the training loss every
    ``every`` steps, the run's configuration as text and the model's graph."""

    def __init__(self, folder: Path, every: int = 10):
        self.folder, self.every = Path(folder), every
        self.writer = None

    def check(self) -> None:
        """Before any work: TensorBoard is installed and the folder can be written."""
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            raise UserError(TENSORBOARD_HINT) from None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / ".torch_mnist-write-test", "w"):
                pass
            os.unlink(self.folder / ".torch_mnist-write-test")
        except OSError as e:
            raise UserError(f"--tensorboard {self.folder}: cannot be written ({e.strerror})") from None

    def start(self, model, config, done_epochs, steps_per_epoch) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.steps_per_epoch = steps_per_epoch
        # purge_step: TensorBoard drops what an interrupted run wrote past the point we resume from.
        purge = done_epochs * steps_per_epoch + 1 if done_epochs else None
        self.writer = SummaryWriter(str(self.folder), purge_step=purge)
        if done_epochs == 0:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
            device = next(model.parameters()).device
            was_training = model.training
            model.eval()  # traced without dropout, so drawing the graph takes no random numbers from the run
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns of its own future
                warnings.simplefilter("ignore", FutureWarning)
                self.writer.add_graph(model, torch.zeros(1, model.in_features, device=device))
            model.train(was_training)

    def epoch_end(self, epoch, figures, learning_rate, seconds, step_losses) -> None:
        step = epoch * self.steps_per_epoch  # scalars share the global step axis: steps done so far
        for key in HISTORY_KEYS:
            self.writer.add_scalar(f"epoch/{key}", figures[key], step)
        self.writer.add_scalar("epoch/learning_rate", learning_rate, step)
        self.writer.add_scalar("epoch/seconds", seconds, step)
        first = (epoch - 1) * self.steps_per_epoch
        for i in range(0, len(step_losses), self.every):
            self.writer.add_scalar("step/loss", float(step_losses[i]), first + i + 1)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
