"""One epoch of training and exact evaluation, hand-written; :mod:`.run` loops over them for a whole run."""

import contextlib
import math
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..data.mnist import Normalization
from ..errors import UserError
from ..model.losses import cross_entropy
from .progress import Progress

LossFn = Callable[..., torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]  # (images, labels) -> (loss, correct)


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss (usually: the learning rate is too large)."""

    def __init__(self, epoch: int, step: int, value: Optional[float] = None):
        became = f"became {value}" if value is not None else "was not finite"
        super().__init__(f"the loss {became} at epoch {epoch}, step {step}; the run diverged - "
                         "try a smaller --lr (the reference uses 0.001)")
        self.epoch, self.step = epoch, step


class EpochMeter:
    """Per-step losses, correct counts and batch sizes, kept on the device until read.

    Recording only keeps references (no device work, no synchronisation), so on CUDA
    a step never waits for the GPU; :meth:`read` stacks them and reads the device once.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.losses: List[torch.Tensor] = []  # each step's mean batch loss, a 0-dim tensor
        self.correct: List[torch.Tensor] = []  # each step's count of right predictions, a 0-dim tensor
        self.sizes: List[int] = []  # each step's batch size, known on the host

    @property
    def recorded(self) -> int:
        return len(self.losses)

    def record(self, step: int, loss: torch.Tensor, correct: torch.Tensor, batch_size: int) -> None:
        if step != self.recorded:
            raise ValueError(f"step {step} recorded after {self.recorded} steps")
        self.losses.append(loss.detach())
        self.correct.append(correct)
        self.sizes.append(batch_size)

    def step_losses(self) -> torch.Tensor:
        """Each recorded step's loss, one tensor on the device."""
        return torch.stack(self.losses) if self.losses else torch.zeros(0, device=self.device)

    def read(self) -> Dict[str, float]:
        """Sample-weighted means over the steps so far (Keras' epoch figures) and the first step whose
        loss was not finite (1-based; 0 when none), in one transfer from the device."""
        n = self.recorded
        if n == 0:
            return {"loss": math.nan, "accuracy": math.nan, "non_finite_step": 0}
        losses = self.step_losses()
        sizes = torch.tensor(self.sizes, dtype=torch.float64).to(losses.device, non_blocking=True)
        total = sum(self.sizes)
        steps = torch.arange(1, n + 1, device=losses.device, dtype=torch.float64)
        first_bad = torch.where(torch.isfinite(losses), float(n + 1), steps).min()
        loss, correct, first_bad = torch.stack([(losses.double() * sizes).sum(),
                                                torch.stack(self.correct).sum().double(), first_bad]).tolist()
        return {"loss": loss / total, "accuracy": correct / total,
                "non_finite_step": 0 if first_bad > n else int(first_bad)}

    def non_finite_error(self, epoch: int, step: int) -> NonFiniteLossError:
        return NonFiniteLossError(epoch, step, float(self.losses[step - 1]))


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, images: torch.Tensor,
                  labels: torch.Tensor, precision=contextlib.nullcontext()) -> Tuple[torch.Tensor, torch.Tensor]:
    """One eager step: zero_grad, forward and loss, backward, update; returns ``(loss, correct)``, the batch's
    mean loss and its count of right predictions (as :class:`~torch_mnist.training.compiled.CompiledStep`)."""
    optimizer.zero_grad(set_to_none=True)
    with precision:
        logits = model(images)
        loss = loss_fn(logits, labels)  # autocast computes the loss in float32
    loss.backward()
    optimizer.step()
    return loss, (logits.argmax(dim=1) == labels).sum()


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, device: torch.device, *,
                    loss_fn: LossFn = cross_entropy, epoch: int = 1, progress: Optional[Progress] = None,
                    autocast_dtype: Optional[torch.dtype] = None, stop_on_non_finite: bool = True,
                    step: Optional[Step] = None) -> Dict[str, float]:
    """Train over ``batches`` once; return the epoch's ``{"loss", "accuracy", "non_finite_step", "step_losses"}``
    (the last: each step's mean batch loss, a CPU tensor).

    A NaN or infinite loss raises :class:`NonFiniteLossError` as soon as it is seen
    (every step on the CPU, where reading costs nothing; at redraws and the end on CUDA).
    Under DDP pass ``stop_on_non_finite=False``: a rank stopping alone would leave the
    others waiting in the next all-reduce, so the ranks decide together after the epoch.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the forward passes under
    autocast; the weights, their gradients and the optimizer stay float32.
    ``step`` replaces the eager :func:`training_step` (with ``optimizer``, ``loss_fn`` and
    ``autocast_dtype``) by another with its signature, e.g. a
    :class:`~torch_mnist.training.compiled.CompiledStep` of the same objects.
    """
    model.train()
    meter = EpochMeter(device)
    check_each_step = stop_on_non_finite and device.type == "cpu"
    precision = torch.autocast(device.type, autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    step = step or (lambda images, labels: training_step(model, optimizer, loss_fn, images, labels, precision))
    for index, (images, labels) in enumerate(batches):
        loss, correct = step(images, labels)
        meter.record(index, loss, correct, len(labels))
        if check_each_step and not math.isfinite(loss.item()):  # on the CPU a read costs nothing
            raise meter.non_finite_error(epoch, index + 1)  # stop at once, not 400 NaN steps later
        if progress is not None and progress.due():
            figures = meter.read()
            if stop_on_non_finite and figures["non_finite_step"]:
                raise meter.non_finite_error(epoch, figures["non_finite_step"])
            progress.show(index + 1, figures)
    figures = meter.read()
    if stop_on_non_finite and figures["non_finite_step"]:
        raise meter.non_finite_error(epoch, figures["non_finite_step"])
    return {**figures, "step_losses": meter.step_losses().cpu()}  # one copy per epoch, for logs


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, *, loss_fn: LossFn = cross_entropy,
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


@torch.no_grad()
def predict_probabilities(model: nn.Module, normalization: Normalization, pixels: np.ndarray,
                          device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Class probabilities (N, classes) for uint8 images (N, 28, 28), normalized as in training."""
    images = normalization.apply(torch.from_numpy(np.ascontiguousarray(pixels))).flatten(1).to(device)
    was_training = model.training
    model.eval()
    try:
        return torch.softmax(model(images), dim=1).cpu().numpy()
    finally:
        model.train(was_training)  # the caller's model as it was
