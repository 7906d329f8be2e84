"""RMSprop with Keras' arithmetic, in either generation's placement of epsilon."""

from typing import Iterable

import torch
from torch.optim import Optimizer

EPS_PLACEMENTS = ("outside", "inside")


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
    eps 1e-8). The denominator is built in a buffer kept per parameter, so
    a step allocates nothing: on the CPU a fresh 1.6 MB tensor per step is
    measurably slower than reusing one.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                 eps_placement: str = "outside"):
        if eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")
        if lr <= 0 or eps <= 0 or not 0.0 <= rho < 1.0:
            raise ValueError(f"invalid RMSprop hyperparameters lr={lr}, rho={rho}, eps={eps}")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "eps_placement": eps_placement})
        self._denominators: dict = {}  # scratch space, deliberately not part of state_dict()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["rho"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                square_avg = state["square_avg"]
                square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
                denominator = self._denominator_buffer(p)
                if group["eps_placement"] == "outside":
                    torch.sqrt(square_avg, out=denominator).add_(eps)
                else:
                    torch.add(square_avg, eps, out=denominator).sqrt_()
                p.addcdiv_(g, denominator, value=-lr)
        return loss

    def _denominator_buffer(self, p: torch.Tensor) -> torch.Tensor:
        buffer = self._denominators.get(p)
        if buffer is None or buffer.shape != p.shape or buffer.device != p.device:
            buffer = self._denominators[p] = torch.empty_like(p)
        return buffer
