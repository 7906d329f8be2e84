"""A whole training run: data, model, optimizer, resume, and periodic checkpoints."""

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from .config import AUTOCAST_DTYPES, KERAS_SEMANTICS, TrainConfig
from .data import Normalization, make_batches
from .distributed import Shard, check_divisible, reduce_means
from .engine import History, fit, loss_for, new_history
from .errors import UserError
from .model import MLP
from .optim import RMSprop
from .progress import Progress
from .runtime import check_compile, compile_model, fast_cpu_math


@dataclass
class RunResult:
    """What a finished run leaves in memory, for reports that would otherwise reload it."""

    history: History
    model: MLP  # the trained model (unwrapped from DDP)
    test_batches: object  # the validation batches it was evaluated on


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
            save_checkpoint(self.pending, self.path)
            self.saved_epoch = self.pending["epoch"]
            self.pending = None


def resume_config(checkpoint: dict, epochs: int) -> TrainConfig:
    """The checkpoint's config with ``epochs`` as the run's new total (Keras' ``initial_epoch`` rule)."""
    config = replace(TrainConfig.from_dict(checkpoint["config"]), epochs=epochs)
    if checkpoint["epoch"] >= epochs:
        raise UserError(f"the checkpoint has already trained {checkpoint['epoch']} epochs; "
                        f"pass --epochs larger than {checkpoint['epoch']} to continue")
    return config


def run_training(config: TrainConfig, data_root: Path, device: torch.device, out: Path, *,
                 save_every: int = 1, resume: Optional[dict] = None,
                 progress: Optional[Progress] = None, writer: Optional[CheckpointWriter] = None,
                 shard: Shard = Shard()) -> RunResult:
    """Train ``config`` (continuing ``resume``, a loaded checkpoint, if given); checkpoint to ``out``.

    Seeds torch's global generator with ``config.seed`` (dropout draws from it).
    Pass your own ``writer`` to inspect what was saved after an interruption. Under torchrun,
    ``shard`` is this rank: it trains on its share of each batch through DDP, and only rank 0 writes.
    """
    config.validate()
    if config.compile:
        if shard.world_size > 1:
            raise UserError("--compile is not supported under torchrun; run without it")
        check_compile(device)  # one clear line now rather than a compiler traceback at the first step
    semantics = KERAS_SEMANTICS[config.keras_semantics]
    normalization = Normalization.named(config.normalize, config.dataset)
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    init_generator = torch.Generator().manual_seed(config.seed)  # a separate stream for the weights
    model = MLP(hidden=config.hidden, dropout=config.dropout, generator=init_generator).to(device)
    torch.manual_seed(config.seed)  # dropout draws from torch's global generator
    optimizer = RMSprop(model.parameters(), lr=config.lr, rho=config.rho, eps=config.eps,
                        eps_placement=semantics["eps_placement"], compiled=config.compile)
    history, initial_epoch = new_history(), 0
    if resume is not None:
        history, initial_epoch = _restore(resume, model, optimizer, shuffle_generator, device)

    train_batches = make_batches(data_root, True, normalization, config.batch_size, device,
                                 config.loader, shuffle_generator, config.dataset, shard)
    test_batches = make_batches(data_root, False, normalization, config.batch_size, device, config.loader,
                                dataset=config.dataset)
    writer = writer or CheckpointWriter(out, save_every, config.epochs, enabled=shard.is_main)
    train_model, reduce = _training_model(model, config, device, shard, train_batches.num_samples)

    def on_epoch_end(epoch: int, history: History) -> None:
        writer.epoch_end(make_checkpoint(model, optimizer, config, normalization, epoch, history,
                                         shuffle_generator))

    with fast_cpu_math(device):
        try:
            fit(train_model, optimizer, train_batches, test_batches, device, config.epochs,
                loss_fn=loss_for(config.keras_semantics), initial_epoch=initial_epoch,
                history=history, progress=progress, on_epoch_end=on_epoch_end, reduce=reduce,
                autocast_dtype=AUTOCAST_DTYPES[config.amp])
        finally:
            writer.flush()  # keep the last complete epoch, whatever stopped us
    return RunResult(history, model, test_batches)


def _training_model(model: MLP, config: TrainConfig, device: torch.device, shard: Shard,
                    num_samples: int) -> tuple:
    """What the loop trains through (``model``, DDP under torchrun, or compiled) and how ranks' figures combine."""
    if shard.world_size > 1:
        check_divisible(num_samples, config.batch_size, shard.world_size)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return ddp, partial(reduce_means, shard=shard, device=device)  # average the ranks' epoch figures
    if config.compile:
        return compile_model(model), None
    return model, None


def _restore(resume: dict, model: MLP, optimizer: torch.optim.Optimizer, shuffle_generator: torch.Generator,
             device: torch.device) -> tuple:
    """Put a checkpoint's state back; return its ``(history, epochs done)``."""
    model.load_state_dict(resume["model_state"])
    optimizer.load_state_dict(resume["optimizer_state"])
    shuffle_generator.set_state(resume["rng_state"])
    if "torch_rng_state" in resume:  # dropout's stream
        torch.set_rng_state(resume["torch_rng_state"])
        if device.type == "cuda" and "cuda_rng_state" in resume:
            torch.cuda.set_rng_state(resume["cuda_rng_state"], device)
    return {k: list(v) for k, v in resume["history"].items()}, resume["epoch"]


def load_for_resume(path: Path, epochs: int) -> tuple:
    """Load a checkpoint to continue; return ``(checkpoint, config)``."""
    checkpoint = load_checkpoint(path)
    return checkpoint, resume_config(checkpoint, epochs)
