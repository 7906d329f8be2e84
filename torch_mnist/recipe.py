"""The one place a :class:`TrainConfig` becomes objects: model, optimizer, loss, normalization, precision.

Training, the benchmark, checkpoint loading and the result commands all build
through here, so what a configuration means cannot drift between them.
"""

import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Optional, Tuple

import torch

from .config import KERAS_SEMANTICS, TrainConfig
from .data.mnist import Normalization
from .errors import UserError
from .model.losses import cross_entropy
from .model.mlp import IMAGE_PIXELS, MLP
from .model.optim import RMSprop

NUM_CLASSES = 10  # every supported dataset has ten classes
AUTOCAST_DTYPES = {"off": None, "bf16": torch.bfloat16}  # --amp: the dtype training forward passes run in
LossFn = Callable[..., torch.Tensor]


@dataclass
class Recipe:
    """Everything a run trains with, built from its configuration."""

    model: MLP
    optimizer: RMSprop
    loss_fn: LossFn
    normalization: Normalization
    autocast_dtype: Optional[torch.dtype]  # training forward passes under autocast; None: float32


def build(config: TrainConfig, device: torch.device) -> Recipe:
    """The run's objects; the weights are drawn from their own generator seeded with ``config.seed``."""
    init_generator = torch.Generator().manual_seed(config.seed)  # a stream apart from shuffling and dropout
    model = new_model(config, init_generator).to(device)
    optimizer = RMSprop(model.parameters(), lr=config.lr, rho=config.rho, eps=config.eps,
                        eps_placement=KERAS_SEMANTICS[config.keras_semantics]["eps_placement"])
    return Recipe(model, optimizer, loss_of(config), normalization_of(config), AUTOCAST_DTYPES[config.amp])


def new_model(config: TrainConfig, generator: Optional[torch.Generator] = None) -> MLP:
    """A freshly initialized model of ``config``'s shape (checkpoint.build_model rebuilds a saved one)."""
    check_fits_in_memory(config)
    return MLP(IMAGE_PIXELS, config.hidden, NUM_CLASSES, config.dropout, generator)


# float32 weights, their gradients, RMSprop's averages and a checkpoint's copy: four floats a parameter
BYTES_PER_PARAMETER = 4 * 4


def check_fits_in_memory(config: TrainConfig) -> None:
    """Refuse, before allocating, a model whose weights and training state cannot fit in this machine's memory
    (the configuration's bounds allow ~1 TB of weights)."""
    parameters = sum(inputs * outputs + outputs for inputs, outputs in (
        (shape[1], shape[0]) for name, shape in weight_shapes(config).items() if name.endswith(".weight")))
    needed, available = parameters * BYTES_PER_PARAMETER, available_memory()
    if available is not None and needed > available:
        raise UserError(f"--hidden ({len(config.hidden)} layers, the widest {max(config.hidden)}): {parameters:,} "
                        f"parameters need about "
                        f"{needed / 2 ** 30:,.1f} GiB to train, more than this machine's available "
                        f"{available / 2 ** 30:,.1f} GiB")


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def weight_shapes(config: TrainConfig) -> Dict[str, Tuple[int, ...]]:
    """The ``state_dict`` shapes of ``config``'s model, computed without allocating it."""
    widths = (IMAGE_PIXELS, *config.hidden, NUM_CLASSES)
    shapes = {}
    for i, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        shapes[f"fc{i}.weight"] = (outputs, inputs)  # nn.Linear keeps (out, in)
        shapes[f"fc{i}.bias"] = (outputs,)
    return shapes


def loss_of(config: TrainConfig) -> LossFn:
    """The loss of the run's ``keras_semantics`` (keras2: plain, keras3: probabilities clipped)."""
    return partial(cross_entropy, clip_probabilities=KERAS_SEMANTICS[config.keras_semantics]["clip_probabilities"])


def normalization_of(config: TrainConfig) -> Normalization:
    return Normalization.named(config.normalize, config.dataset)
