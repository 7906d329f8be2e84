"""A whole training run: the epoch loop with its data, checkpoints, resume and data parallelism."""

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.batches import make_batches
from .checkpoint import load_checkpoint, make_checkpoint, restore, save_checkpoint
from ..config import TrainConfig, learning_rate
from ..data.distort import DistortedBatches, Distorter, distortion_seed
from ..distributed import Shard, check_divisible, dropout_seed, gather_states, local_main_first, reduce_epoch, together
from .epoch import NonFiniteLossError, evaluate, train_one_epoch
from .onednn import linear_layers_through_onednn
from ..errors import Note, UserError
from ..history import History, new_history, record_epoch
from .logs import RunLog
from ..model.mlp import MLP
from .progress import Progress
from ..recipe import build
from .compiled import CompiledStep
from .runtime import fast_cpu_math, native_bf16_cpu


@dataclass
class RunResult:
    """What a finished run leaves in memory, for reports that would otherwise reload it."""

    history: History
    model: MLP  # the trained model (unwrapped from DDP)
    test_batches: object  # the validation batches it was evaluated on
    predicted: Optional[torch.Tensor] = None  # the last validation's predictions and labels (CPU int64)
    labels: Optional[torch.Tensor] = None


class CheckpointWriter:
    """Snapshots the run after every epoch and writes every ``save_every``-th one.

    On an interruption or error, :meth:`flush` writes the last complete
    epoch's snapshot if it has not been written yet, so no finished epoch is lost.
    """

    def __init__(self, path: Path, save_every: int, epochs: int, enabled: bool = True):
        self.path, self.save_every, self.epochs = Path(path), save_every, epochs
        self.enabled = enabled  # under torchrun only rank 0 writes
        self.pending: Optional[dict] = None
        self.saved_epoch: Optional[int] = None

    def epoch_end(self, snapshot: dict) -> None:
        self.pending = snapshot
        epoch = snapshot["epoch"]
        if epoch % self.save_every == 0 or epoch == self.epochs:
            self.flush()

    def flush(self) -> None:
        if self.pending is not None and self.enabled:
            try:
                save_checkpoint(self.pending, self.path)
            except OSError as e:  # a full disk, a folder made read-only meanwhile: the earlier file is intact
                raise UserError(f"{self.path}: the checkpoint of epoch {self.pending['epoch']} could not be "
                                f"written ({e.strerror or e})") from None
            self.saved_epoch = self.pending["epoch"]
            self.pending = None


def run_training(config: TrainConfig, data_root: Path, device: torch.device, out: Path, *,
                 save_every: int = 1, resume: Optional[dict] = None,
                 progress: Optional[Progress] = None, writer: Optional[CheckpointWriter] = None,
                 shard: Shard = Shard(), logs: Sequence[RunLog] = ()) -> RunResult:
    """Train ``config`` (continuing ``resume``, a loaded checkpoint, if given); checkpoint to ``out``.

    Dropout draws from torch's global generator, seeded from ``config.seed``: inside a fork of the caller's
    generators (CPU and the device's), so the caller's random streams are as they were afterwards.
    Pass your own ``writer`` to inspect what was saved after an interruption. Under torchrun,
    ``shard`` is this rank: it trains on its share of each batch through DDP with dropout masks of
    its own, and only rank 0 writes. ``logs`` (a CSV, TensorBoard) hear of every finished epoch.
    """
    config.validate()
    _check_speed_options(config, device, shard)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _run(config, data_root, device, out, save_every=save_every, resume=resume, progress=progress,
                    writer=writer, shard=shard, logs=logs)


def _run(config: TrainConfig, data_root: Path, device: torch.device, out: Path, *, save_every: int,
         resume: Optional[dict], progress: Optional[Progress], writer: Optional[CheckpointWriter], shard: Shard,
         logs: Sequence[RunLog]) -> RunResult:
    """The run: its objects, then the epoch loop (each epoch's steps in the helpers below it)."""
    recipe = build(config, device)
    torch.manual_seed(dropout_seed(config.seed, shard.rank))  # dropout draws from torch's global generator
    shuffle_generator = torch.Generator().manual_seed(config.seed)  # the same permutation on every rank
    history = new_history() if resume is None else restore(resume, recipe.model, recipe.optimizer,
                                                           shuffle_generator, device, shard)
    train_batches, test_batches = local_main_first(
        lambda: _batches(config, data_root, device, recipe, shuffle_generator, shard), shard, device)
    train_model = _training_model(recipe.model, config, shard, device, train_batches.num_samples)
    # One compiled graph per step in one process; under torchrun, DDP's eager steps (it all-reduces gradients).
    step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn, recipe.autocast_dtype) \
        if config.compile and not shard.distributed else None
    writer = writer or CheckpointWriter(out, save_every, config.epochs, enabled=shard.is_main)
    progress = progress or Progress("quiet")
    result = RunResult(history, recipe.model, test_batches)
    for log in logs:
        log.start(recipe.model, config.to_dict(), len(history["loss"]), len(train_batches))
    with fast_cpu_math(device):
        try:
            for epoch in range(len(history["loss"]) + 1, config.epochs + 1):
                started = time.perf_counter()
                _start_epoch(train_batches, recipe.optimizer, config, epoch, shard)
                with progress.epoch(epoch, config.epochs, len(train_batches)):
                    train = _train_epoch(train_model, train_batches, recipe, device, epoch, progress, step, shard)
                    with linear_layers_through_onednn():  # the products as the compiled step's (AMD CPUs)
                        val = evaluate(train_model, test_batches, device, loss_fn=recipe.loss_fn,
                                       keep_predictions=True)
                figures = record_epoch(history, train, val)
                progress.end_epoch(figures)
                _log_epoch(logs, epoch, figures, recipe.optimizer, time.perf_counter() - started, train)
                result.predicted, result.labels = val["predicted"], val["labels"]
                _save_epoch(writer, recipe, config, epoch, history, shuffle_generator, shard, device)
        finally:
            writer.flush()  # keep the last complete epoch, whatever stopped us
            for log in logs:
                log.close()
    return result


def _batches(config: TrainConfig, data_root: Path, device: torch.device, recipe, shuffle_generator: torch.Generator,
             shard: Shard) -> tuple:
    """The run's training batches (shuffled, this rank's share, distorted where the config says) and its
    validation batches (in order)."""
    train_batches = make_batches(data_root, recipe.normalization, train=True, batch_size=config.batch_size,
                                 device=device, loader=config.loader, generator=shuffle_generator,
                                 dataset=config.dataset, shard=shard)
    test_batches = make_batches(data_root, recipe.normalization, train=False, batch_size=config.batch_size,
                                device=device, loader=config.loader, dataset=config.dataset)
    if config.distort:  # the same shuffled batches, each image redrawn (seeded per epoch and rank)
        split = train_batches.split
        distorter = Distorter(split.images, config.distort, recipe.normalization.background(), compile=config.compile)
        train_batches = DistortedBatches(split, config.batch_size, shuffle_generator, distorter, shard)
    return train_batches, test_batches


def _train_epoch(train_model: torch.nn.Module, train_batches, recipe, device: torch.device, epoch: int,
                 progress: Progress, step, shard: Shard) -> dict:
    """One epoch's training figures, averaged over the ranks under torchrun (which stop together on a
    non-finite loss: a rank stopping alone would leave the others waiting in the next all-reduce)."""
    train = train_one_epoch(train_model, train_batches, recipe.optimizer, device, loss_fn=recipe.loss_fn,
                            epoch=epoch, progress=progress, autocast_dtype=recipe.autocast_dtype,
                            stop_on_non_finite=not shard.distributed, step=step)
    train = reduce_epoch(train, shard, device)  # figures averaged, the first bad step shared
    if train["non_finite_step"]:
        raise NonFiniteLossError(epoch, train["non_finite_step"])
    return train


def _log_epoch(logs: Sequence[RunLog], epoch: int, figures: dict, optimizer: torch.optim.Optimizer,
               seconds: float, train: dict) -> None:
    for log in logs:
        log.epoch_end(epoch, figures, optimizer.param_groups[0]["lr"], seconds, train["step_losses"])


def _save_epoch(writer: CheckpointWriter, recipe, config: TrainConfig, epoch: int, history: History,
                shuffle_generator: torch.Generator, shard: Shard, device: torch.device) -> None:
    """The epoch's checkpoint, by rank 0, every rank taking part (their dropout streams are gathered)."""
    rank_states = _rank_rng_states(shard, device)  # collective: every rank takes part

    def save() -> None:
        if shard.is_main:  # only the writer copies the weights to the host
            writer.epoch_end(make_checkpoint(recipe.model, recipe.optimizer, config, epoch, history,
                                             shuffle_generator, rank_states))
    together(save, shard, device, "the checkpoint could not be written by rank 0")


def _start_epoch(train_batches, optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int,
                 shard: Shard) -> None:
    """The epoch's learning rate, and its distortions' seed: both from the epoch's number, so a resumed run
    continues exactly."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, epoch)
    if isinstance(train_batches, DistortedBatches):
        train_batches.start_epoch(distortion_seed(config.seed, epoch, shard.rank))


def _rank_rng_states(shard: Shard, device: torch.device) -> Optional[dict]:
    """Under torchrun, every rank's dropout streams, for rank 0's checkpoint (None in one process)."""
    if not shard.distributed:
        return None
    states = {"torch": gather_states(torch.get_rng_state(), shard, device)}
    if device.type == "cuda":
        states["cuda"] = gather_states(torch.cuda.get_rng_state(device), shard, device)
    return states


def _check_speed_options(config: TrainConfig, device: torch.device, shard: Shard) -> None:
    if config.amp == "bf16" and device.type == "cpu" and native_bf16_cpu() is False and shard.is_main:
        warnings.warn("--amp bf16: this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX), so bf16 is emulated "
                      "and slower than float32 here; the default float32 is the fast choice", Note, stacklevel=3)


def _training_model(model: MLP, config: TrainConfig, shard: Shard, device: torch.device,
                    num_samples: int) -> torch.nn.Module:
    """What the loop trains and validates through: ``model`` itself, or DDP under torchrun."""
    if shard.world_size > 1:
        check_divisible(num_samples, config.batch_size, shard.world_size)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def resume_config(checkpoint: dict, epochs: Optional[int] = None) -> TrainConfig:
    """The checkpoint's config, its total ``epochs`` replaced if given (Keras' ``initial_epoch`` rule)."""
    config = TrainConfig.from_dict(checkpoint["config"])
    config = replace(config, epochs=epochs if epochs is not None else config.epochs).validate()
    if checkpoint["epoch"] >= config.epochs:
        raise UserError(f"the checkpoint has already trained {checkpoint['epoch']} of {config.epochs} epochs; "
                        f"pass --epochs larger than {checkpoint['epoch']} to continue")
    return config


def load_for_resume(path: Path, epochs: Optional[int] = None) -> tuple:
    """Load a checkpoint to continue; return ``(checkpoint, config)``."""
    checkpoint = load_checkpoint(path)
    return checkpoint, resume_config(checkpoint, epochs)
