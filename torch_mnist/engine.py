"""The hand-written loop: one training epoch, exact evaluation, and fit()."""

import contextlib
from functools import partial
from typing import Callable, Dict, Iterable, Optional

import torch
from torch import nn

from .config import KERAS_SEMANTICS
from .errors import UserError
from .losses import cross_entropy
from .progress import Progress

History = Dict[str, list]
LossFn = Callable[..., torch.Tensor]
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss (usually: the learning rate is too large)."""

    def __init__(self, epoch: int, step: int, value: float):
        super().__init__(f"the loss became {value} at epoch {epoch}, step {step}; the run diverged - "
                         "try a smaller --lr (the reference uses 0.001)")
        self.epoch, self.step = epoch, step


class EpochMeter:
    """Per-step losses and correct counts, kept on the device until read.

    Recording is asynchronous; only :meth:`means` and :meth:`check_finite`
    read the device, so on CUDA a step never waits for the GPU.
    """

    def __init__(self, steps: int, device: torch.device):
        self.losses = torch.zeros(steps, device=device)  # each step's mean batch loss
        self.correct = torch.zeros(steps, dtype=torch.int64, device=device)
        self.sizes = []  # batch sizes, known on the host without syncing
        self._checked = 0  # steps already known to be finite

    def record(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.losses[step] = loss.detach()
        self.correct[step] = (logits.argmax(dim=1) == labels).sum()
        self.sizes.append(len(labels))

    def means(self) -> Dict[str, float]:
        """Sample-weighted means over the steps recorded so far (Keras' epoch figures)."""
        n = len(self.sizes)
        sizes = torch.tensor(self.sizes, dtype=torch.float64, device=self.losses.device)
        total = sizes.sum()
        loss = (self.losses[:n].double() * sizes).sum() / total
        accuracy = self.correct[:n].sum().double() / total
        return {"loss": loss.item(), "accuracy": accuracy.item()}

    def check_finite(self, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` naming the first step whose loss was not finite."""
        unchecked = self.losses[self._checked:len(self.sizes)]
        if not bool(torch.isfinite(unchecked).all()):
            step = self._checked + int((~torch.isfinite(unchecked)).nonzero()[0])
            raise NonFiniteLossError(epoch, step + 1, float(self.losses[step]))
        self._checked = len(self.sizes)


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                    device: torch.device, loss_fn: LossFn = cross_entropy, epoch: int = 1,
                    progress: Optional[Progress] = None,
                    autocast_dtype: Optional[torch.dtype] = None) -> Dict[str, float]:
    """Train over ``batches`` once; return the epoch's ``{"loss", "accuracy"}``.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under
    autocast; the weights, their gradients and the optimizer stay float32.
    """
    model.train()
    meter = EpochMeter(len(batches), device)
    check_every_step = device.type == "cpu"  # reading a CPU tensor costs no synchronisation
    precision = torch.autocast(device.type, autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    for step, (images, labels) in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        with precision:
            logits = model(images)
            loss = loss_fn(logits, labels)  # autocast computes the loss in float32
        loss.backward()
        optimizer.step()
        meter.record(step, loss, logits, labels)
        if check_every_step or (progress is not None and progress.due()):
            meter.check_finite(epoch)  # stop at once, not 400 NaN steps later
        if progress is not None:
            progress.show(step + 1, meter.means)  # reads the device only when a redraw is due
    meter.check_finite(epoch)
    return meter.means()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, loss_fn: LossFn = cross_entropy,
             keep_predictions: bool = False) -> Dict:
    """Exact test-set figures: summed loss and correct count over the number of images.

    Runs under ``eval()`` and restores the previous mode; consumes no random numbers.
    ``keep_predictions`` adds ``"predicted"`` and ``"labels"`` (CPU int64, in batch order),
    so a confusion matrix needs no second pass over the data.
    """
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count, predicted, true = 0, [], []
    for images, labels in batches:
        logits = model(images)
        predictions = logits.argmax(dim=1)
        total_loss += loss_fn(logits, labels, reduction="sum")
        correct += (predictions == labels).sum()
        count += len(labels)
        if keep_predictions:
            predicted.append(predictions)
            true.append(labels)
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got no batches")
    metrics = {"loss": total_loss.item() / count, "accuracy": correct.item() / count}
    if keep_predictions:
        metrics.update(predicted=torch.cat(predicted).cpu(), labels=torch.cat(true).cpu())
    return metrics


def new_history() -> History:
    """An empty history in the shape of Keras' ``History.history``."""
    return {key: [] for key in HISTORY_KEYS}


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train_batches: Iterable, val_batches: Iterable,
        device: torch.device, epochs: int, *, loss_fn: LossFn = cross_entropy, initial_epoch: int = 0,
        history: Optional[History] = None, progress: Optional[Progress] = None,
        on_epoch_end: Optional[Callable[[int, History], None]] = None,
        reduce: Optional[Callable[[Dict[str, float]], Dict[str, float]]] = None,
        autocast_dtype: Optional[torch.dtype] = None) -> History:
    """Train epochs ``initial_epoch + 1 .. epochs``, validating after each, like Keras' ``fit``.

    ``on_epoch_end(epoch, history)`` runs after each epoch (checkpointing hooks in there);
    ``reduce`` combines the training figures of data-parallel ranks (see :mod:`.distributed`);
    ``autocast_dtype`` applies to training only: validation stays float32, so its figures
    are the ones ``evaluate.py`` reports for the saved weights.
    """
    history = history if history is not None else new_history()
    progress = progress or Progress("quiet")
    for epoch in range(initial_epoch + 1, epochs + 1):
        progress.start_epoch(epoch, epochs, len(train_batches))
        try:
            train = train_one_epoch(model, train_batches, optimizer, device, loss_fn, epoch, progress,
                                    autocast_dtype)
            if reduce is not None:
                train = reduce(train)
            val = evaluate(model, val_batches, device, loss_fn)
        except BaseException:
            progress.close()  # an interrupted epoch leaves no half-drawn bar behind
            raise
        for key, value in [*train.items(), *(("val_" + k, v) for k, v in val.items())]:
            history[key].append(value)
        progress.end_epoch({key: history[key][-1] for key in HISTORY_KEYS})
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def make_loss_fn(clip_probabilities: bool) -> LossFn:
    """The loss with the chosen Keras generation's clipping baked in."""
    return partial(cross_entropy, clip_probabilities=clip_probabilities)


def loss_for(keras_semantics: str) -> LossFn:
    """The loss of a run's ``--keras-semantics`` (keras2: plain, keras3: clipped)."""
    return make_loss_fn(KERAS_SEMANTICS[keras_semantics]["clip_probabilities"])
