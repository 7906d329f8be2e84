"""The training step as one compiled graph: forward, backward, RMSprop update, loss and correct count.

Eagerly, every operation of a step is its own call: a pass over memory and a
trip through Python and the dispatcher. Here the forward runs through the ``nn.Module`` itself
(``torch.func.functional_call``), ``torch.func.grad_and_value`` derives the
backward, and the update writes the model's parameters and the optimizer's
averages in place, all traced once by ``torch.compile`` into a single graph
that Inductor fuses around the matrix products.

The formula is :func:`torch_mnist.model.optim.rmsprop_update`'s, written per
tensor with the hyperparameters as 0-dim tensors: a run with another learning
rate reuses the compiled graph instead of compiling a new one.
"""

import types
import warnings
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from ..errors import Note, one_line, quiet_cuda_probe
from ..interrupts import signals_kept
from ..model.optim import FLT_MIN, RMSprop
from .onednn import compile_options

StepResult = Tuple[torch.Tensor, torch.Tensor]  # (the batch's mean loss, its count of right predictions)


def _step(model: nn.Module, params: List[torch.Tensor], square_avgs: List[torch.Tensor], images: torch.Tensor,
          labels: torch.Tensor, hyperparameters: Dict[str, torch.Tensor], eps_inside: bool,
          loss_fn: Callable, autocast_dtype: Optional[torch.dtype]) -> StepResult:
    names = [name for name, _ in model.named_parameters()]

    def loss_of(weights):
        with torch.autocast(images.device.type, autocast_dtype, enabled=autocast_dtype is not None):
            logits = functional_call(model, dict(zip(names, weights)), (images,))
            loss = loss_fn(logits, labels)  # autocast computes the loss in float32
        return loss, logits

    grads, (loss, logits) = grad_and_value(loss_of, has_aux=True)(params)
    lr, rho, one_minus_rho, eps = (hyperparameters[k] for k in ("lr", "rho", "one_minus_rho", "eps"))
    for param, grad, average in zip(params, grads, square_avgs):
        # rmsprop_update's lines, in its order of rounding; the clamp as there (see its comment).
        average.copy_((average * rho + one_minus_rho * grad * grad).clamp_min(FLT_MIN))
        denominator = (average + eps).sqrt() if eps_inside else average.sqrt() + eps
        param.sub_(lr * (grad / denominator))  # addcdiv's rounding: value * (g / d)
    return loss.detach(), (logits.argmax(dim=1) == labels).sum()


def _new_compiled_step() -> Callable:
    """``_step`` through ``torch.compile``, with a compilation cache of its own.

    torch.compile keeps its graphs per code object, and bounds how many one code object may hold
    (``torch._dynamo.config.recompile_limit``, 8 by default). A process that trains many runs (a sweep,
    a test suite) would share that bound if every run used ``_step``'s own code; a copy of the code
    per run gives each run its own cache, freed with the run's step. Within a run the shapes are fixed
    (the full batch and a ragged last one: one static graph each) and so are the hyperparameters
    (tensors: a changed learning rate recompiles nothing). Inductor's on-disk cache still serves a copy.
    On AMD CPUs with AVX-512 the graph's large float32 products go to oneDNN (:mod:`.onednn`).
    """
    copy = types.FunctionType(_step.__code__.replace(), _step.__globals__, _step.__name__, _step.__defaults__,
                              _step.__closure__)
    return torch.compile(copy, fullgraph=True, dynamic=False, options=compile_options())


class CompiledStep:
    """``step(images, labels) -> (loss, correct)``: one training step of ``model`` with ``optimizer`` as one
    compiled graph, the weights and :class:`RMSprop`'s squared-gradient averages updated in place.

    The optimizer's state is read at every call, so ``optimizer.load_state_dict`` (a resume) is seen.
    Gradients are not stored in ``.grad`` (they live inside the graph). The first call at each batch shape
    compiles (tens of seconds cold, a few seconds from Inductor's on-disk cache); where that fails (no C++
    compiler, no Triton, an unsupported setting), this step says so once (a :class:`Note`) and trains
    eagerly with ``torch.optim``'s protocol from then on: the run continues, slower, from the same state.
    :attr:`implementation` says which ran last: ``"compiled"`` or ``"eager"``.

    The model's structure and attributes (layers, dropout rate) and ``loss_fn`` are fixed for the step's
    life: after a shape's first call only the guards that tell its graphs apart run. Train/eval mode,
    the eps placement, the hyperparameters and the optimizer's state may change between calls.
    """

    def __init__(self, model: nn.Module, optimizer: RMSprop, loss_fn: Callable,
                 autocast_dtype: Optional[torch.dtype] = None):
        if not isinstance(optimizer, RMSprop) or len(optimizer.param_groups) != 1:
            raise ValueError("the compiled step updates with torch_mnist's RMSprop over one parameter group")
        self.model, self.optimizer, self.loss_fn, self.autocast_dtype = model, optimizer, loss_fn, autocast_dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        if [id(p) for p in optimizer.param_groups[0]["params"]] != [id(p) for p in self.params]:
            raise ValueError("the optimizer must hold exactly the model's trainable parameters, in order")
        self.implementation = "compiled"
        self._compiled_signatures: Set[tuple] = set()
        self._hyperparameter_tensors: Tuple[tuple, Dict[str, torch.Tensor]] = ((), {})
        self._compiled_step = _new_compiled_step()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        if self.implementation == "eager":
            return self._eager(images, labels)
        group = self.optimizer.param_groups[0]
        signature = (images.shape, images.dtype, images.device, self.model.training, group["eps_placement"])
        arguments = (self.model, [p.detach() for p in self.params],
                     [self.optimizer.square_avg(p) for p in self.params], images, labels,
                     self._hyperparameters(group, images.device), group["eps_placement"] == "inside",
                     self.loss_fn, self.autocast_dtype)
        if signature in self._compiled_signatures:
            # This graph exists and everything its guards check is fixed for this step's life but what
            # ``signature`` holds (the model, the loss, the precision, the state's shapes), so only the
            # guards that tell its graphs apart (the batch shape) need to run: ~0.1 ms a step saved.
            # A Ctrl-C that lands in a guard is swallowed there: it is delivered again after the call.
            with signals_kept(), torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return self._compiled_step(*arguments)
        with signals_kept() as kept:  # compiling takes seconds: a Ctrl-C acts at once, and is never lost
            try:  # compiling happens here; it fails before the graph runs, so nothing has been updated
                with quiet_cuda_probe():
                    result = self._compiled_step(*arguments)
            except Exception as e:  # torch raises many types here (InductorError, BackendCompilerFailed, ...)
                if kept.interrupted:
                    raise  # an interruption that torch turned into an error: delivered as itself on the way out
                warnings.warn(f"the training step cannot be compiled here ({one_line(e)}); training eagerly, "
                              "which is slower", Note, stacklevel=2)
                self.implementation = "eager"
                return self._eager(images, labels)
        self._compiled_signatures.add(signature)
        return result

    def _hyperparameters(self, group: dict, device: torch.device) -> Dict[str, torch.Tensor]:
        """The group's hyperparameters as float32 tensors on ``device``, made again only when they change."""
        key = (group["lr"], group["rho"], group["eps"], device)
        if self._hyperparameter_tensors[0] != key:
            # 1 - rho in double precision, as the eager update's Python scalar, then rounded to float32 once.
            values = {"lr": group["lr"], "rho": group["rho"], "one_minus_rho": 1 - group["rho"], "eps": group["eps"]}
            self._hyperparameter_tensors = (key, {name: torch.tensor(value, dtype=torch.float32, device=device)
                                                  for name, value in values.items()})
        return self._hyperparameter_tensors[1]

    def _eager(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        from .epoch import training_step  # the loop's own eager step

        precision = torch.autocast(images.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None)
        return training_step(self.model, self.optimizer, self.loss_fn, images, labels, precision)
