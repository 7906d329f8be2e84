"""RMSprop with Keras' arithmetic, in either generation's placement of epsilon."""

from typing import Iterable, List

import torch
from torch.optim import Optimizer

EPS_PLACEMENTS = ("outside", "inside")
FLT_MIN = torch.finfo(torch.float32).tiny  # the smallest normal float32


def rmsprop_update(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                   lr: float, rho: float, eps: float, eps_inside: bool) -> None:
    """One RMSprop step over lists of tensors, in place (see :class:`RMSprop` for the formula).

    Each line is one foreach kernel over all tensors.
    """
    # foreach ops: one C++ loop per operation over all tensors, not one Python call each.
    torch._foreach_mul_(square_avgs, rho)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
    # Arithmetic on subnormals is several times slower on CPUs, and the averages of never-inked
    # pixels decay into them (torch.set_flush_denormal misses the OpenMP workers). Raising them to
    # FLT_MIN (~1.2e-38) changes no update: sqrt(FLT_MIN) ~ 1e-19 vanishes next to eps in float32.
    torch._foreach_clamp_min_(square_avgs, FLT_MIN)
    if eps_inside:
        denominators = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(denominators)
    else:
        denominators = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(denominators, eps)
    torch._foreach_addcdiv_(params, grads, denominators, value=-lr)


class RMSprop(Optimizer):
    """Keras' RMSprop without momentum and not centred.

    ``v = rho * v + (1 - rho) * g**2``, then

    - ``eps_placement="outside"``: ``p -= lr * g / (sqrt(v) + eps)`` — Keras 2,
      tf.keras' legacy optimizer, and ``torch.optim.RMSprop``;
    - ``eps_placement="inside"``: ``p -= lr * g / sqrt(v + eps)`` — Keras 3
      and tf.keras since TF 2.11.

    With eps = 1e-7 the two differ most for small, persistent gradients (the
    rarely inked border pixels), by up to ~30x in step size.

    Defaults are Keras' (torch's RMSprop defaults to lr 1e-2, alpha 0.99,
    eps 1e-8).

    :meth:`step` is the eager update (:func:`rmsprop_update`, foreach
    operations) for any loop written around ``loss.backward()``. The project's
    own loop trains faster through
    :class:`~torch_mnist.training.compiled.CompiledStep`, which applies the
    same formula to the same state inside one compiled graph per step.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                 eps_placement: str = "outside"):
        if eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")
        if lr <= 0 or eps <= 0 or not 0.0 <= rho < 1.0:
            raise ValueError(f"invalid RMSprop hyperparameters lr={lr}, rho={rho}, eps={eps}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "eps_placement": eps_placement})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                rmsprop_update(params, [p.grad for p in params], [self.square_avg(p) for p in params],
                               group["lr"], group["rho"], group["eps"], group["eps_placement"] == "inside")
        return loss

    def square_avg(self, p: torch.Tensor) -> torch.Tensor:
        """``p``'s running average of squared gradients (zeros until the first step), updated in place."""
        state = self.state[p]
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["square_avg"]
