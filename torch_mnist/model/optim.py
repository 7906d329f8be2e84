"""RMSprop with Keras' arithmetic, in either generation's placement of epsilon."""

import warnings
from typing import Callable, Iterable, List, Optional

import torch
from torch.optim import Optimizer

from ..errors import Note
from .kernels import KernelUnavailable, fused_rmsprop

EPS_PLACEMENTS = ("outside", "inside")
FLT_MIN = torch.finfo(torch.float32).tiny  # the smallest normal float32


def rmsprop_update(params: List[torch.Tensor], grads: List[torch.Tensor], square_avgs: List[torch.Tensor],
                   lr: float, rho: float, eps: float, eps_inside: bool) -> None:
    """One RMSprop step over lists of tensors, in place (see :class:`RMSprop` for the formula).

    Eagerly, each line is one foreach kernel over all tensors; under
    ``torch.compile`` the lines fuse into one pass over memory per tensor.
    """
    # foreach ops: one C++ loop per operation over all tensors, not one Python call each.
    torch._foreach_mul_(square_avgs, rho)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
    if params[0].is_cpu:
        # torch's CPU sqrt is ~5x slower on zeros and subnormals, and the averages of
        # never-inked pixels are exactly those (torch.set_flush_denormal misses the
        # OpenMP workers). Raising them to FLT_MIN (~1.2e-38) changes no update:
        # sqrt(FLT_MIN) ~ 1e-19 vanishes next to eps in float32.
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

    How the update runs (:attr:`implementation` says which one did):

    - on the CPU, by default, one pass of a small C++ kernel
      (:mod:`torch_mnist.model.kernels`) over each parameter, its gradient and its
      average, in place of torch's five or six passes. Its arithmetic is the
      eager formula's, except that its square root is IEEE-exact where
      torch's CPU ``sqrt`` is sometimes one unit in the last place off: after
      one step about 1% of the weights differ from the eager update, each by
      at most two units in the last place of its step and one of its own
      (tests/test_kernels.py).
      ``fused=False`` keeps the eager update;
      ``fused=True`` requires the kernel; the default uses it where it builds
      and otherwise says so once (a :class:`~torch_mnist.errors.Note`);
    - elsewhere (CUDA), or with ``fused=False``: foreach operations, one
      kernel per operation over all tensors;
    - ``compiled=True``: the foreach update through ``torch.compile``, one
      fused pass per tensor, last-bit rounding differences (the compiler may
      contract multiply-adds).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-7,
                 eps_placement: str = "outside", compiled: bool = False, fused: Optional[bool] = None):
        if eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"eps_placement must be one of {EPS_PLACEMENTS}, got {eps_placement!r}")
        if lr <= 0 or eps <= 0 or not 0.0 <= rho < 1.0:
            raise ValueError(f"invalid RMSprop hyperparameters lr={lr}, rho={rho}, eps={eps}")
        if compiled and fused:
            raise ValueError("compiled=True and fused=True are two different updates; choose one")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "eps_placement": eps_placement})
        # fullgraph: the update has no Python-side effects; dynamic=False: the shapes never change.
        self._update = torch.compile(rmsprop_update, fullgraph=True, dynamic=False) if compiled else rmsprop_update
        self.compiled = compiled
        self.fused = False if compiled else fused
        self.implementation: Optional[str] = None  # "fused", "foreach" or "torch.compile": set by each step

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads, square_avgs = [p.grad for p in params], [self._square_avg(p) for p in params]
            hyperparameters = (group["lr"], group["rho"], group["eps"], group["eps_placement"] == "inside")
            kernel = self._fused_kernel(params + grads + square_avgs)
            if kernel is not None:
                kernel(params, grads, square_avgs, *hyperparameters, FLT_MIN)
            else:
                self._update(params, grads, square_avgs, *hyperparameters)
            self.implementation = "fused" if kernel else "torch.compile" if self.compiled else "foreach"
        return loss

    def _fused_kernel(self, tensors: List[torch.Tensor]) -> Optional[Callable]:
        """The fused CPU kernel where this step may use it, else None (the foreach update runs)."""
        if self.fused is False or not all(t.is_cpu and t.dtype == torch.float32 and t.is_contiguous()
                                          for t in tensors):
            return None
        try:
            return fused_rmsprop()
        except KernelUnavailable as e:
            if self.fused:
                raise
            if self.fused is None:  # say it once per optimizer, then stop asking
                warnings.warn(f"the fused RMSprop kernel is not available ({e}); using torch's slower foreach "
                              "update", Note, stacklevel=3)
                self.fused = False
            return None

    def _square_avg(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["square_avg"]
