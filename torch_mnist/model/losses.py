"""Cross-entropy on logits, optionally with Keras 3's probability clipping."""

import torch
import torch.nn.functional as F

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the clip bound of categorical_crossentropy


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, clip_probabilities: bool = False,
                  reduction: str = "mean") -> torch.Tensor:
    """Keras' softmax + categorical cross-entropy on one-hot labels.

    ``F.cross_entropy`` on logits and integer labels is the same quantity,
    computed stably through log-softmax (as tf.keras does). Keras 3 instead
    takes the softmax's probabilities and clips them to [1e-7, 1 - 1e-7]
    before the log; ``clip_probabilities=True`` reproduces that, which
    bounds the loss of a confidently wrong prediction at -log(1e-7) ~ 16.1
    and stops gradients through saturated outputs.
    """
    if not clip_probabilities:
        return F.cross_entropy(logits, labels, reduction=reduction)
    probabilities = logits.softmax(dim=1)
    # Keras renormalizes the probabilities before clipping; kept for step-for-step parity, since
    # a last-bit difference decides whether a confident sample is clipped (and gets no gradient).
    probabilities = probabilities / probabilities.sum(dim=1, keepdim=True)
    probabilities = probabilities.clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    losses = -probabilities.gather(1, labels.unsqueeze(1)).squeeze(1).log()
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
