"""The matmul floor: the training step's matrix products at their fastest, timed in the same run as what
they bound (every epoch time is reported as a ratio to it)."""

import itertools
import time
from typing import Callable, Dict, List

import torch

from ..model.mlp import IMAGE_PIXELS
from ..training import onednn

TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000  # the shapes the floor is computed for


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, calls: int = 50, repeats: int = 7) -> float:
    """Seconds per call of ``fn``: the best of ``repeats`` timings of ``calls`` calls, after a warm-up."""
    for _ in range(calls // 5 + 1):
        fn()
    _sync(device)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        timings.append((time.perf_counter() - start) / calls)
    return min(timings)


def _product(device: torch.device, library: str) -> Callable:
    """``(a, b, bias) -> a @ b (+ bias)`` through ``library``: ``"torch.mm"`` (MKL on the CPU, cuBLAS on CUDA)
    or ``"oneDNN"`` (the CPU library the compiled step uses on AMD CPUs, :mod:`..training.onednn`)."""
    if library == "oneDNN":
        return lambda a, b, bias=None: onednn.linear(a, b.t(), bias)
    return lambda a, b, bias=None: a @ b if bias is None else torch.addmm(bias, a, b)


def step_library(device: torch.device) -> str:
    """The library the compiled step's large float32 products run through on ``device``."""
    return "oneDNN" if device.type == "cpu" and onednn.products_through_onednn() else "torch.mm"


def _step_product(device: torch.device) -> Callable:
    """A product through the library the compiled step uses for its large products here (:func:`step_library`),
    a small one through torch.mm (see :data:`..training.onednn.MIN_MULTIPLY_ADDS`; on AMD CPUs with AVX-512
    the step computes the narrowest in its own loops instead, which the floor does not count on)."""
    library, plain = _product(device, step_library(device)), _product(device, "torch.mm")
    return lambda a, b, bias=None: (library if a.shape[0] * a.shape[1] * b.shape[1] >= onednn.MIN_MULTIPLY_ADDS
                                    else plain)(a, b, bias)


def floor_libraries(device: torch.device) -> List[str]:
    """The libraries a product can run through here: oneDNN besides torch.mm on a CPU torch built with it."""
    return ["torch.mm", "oneDNN"] if device.type == "cpu" and torch.backends.mkldnn.is_available() else ["torch.mm"]


def matmul_floor(device: torch.device, batch_size: int = 128, hidden: int = 512, classes: int = 10,
                 repeats: int = 7) -> Dict:
    """The time of the matrix multiplies no training epoch can avoid, at their real shapes.

    Per step: both layers' forward, both weight gradients, and the gradient
    into the hidden layer (the input needs none). Per epoch: 469 steps plus
    the validation forward passes of 10,000 test images. Each product is timed
    through every library torch has for it here, and the faster counts.
    """
    def t(*shape):
        return torch.rand(*shape, device=device)

    x, h, w1, w2, b1 = t(batch_size, IMAGE_PIXELS), t(batch_size, hidden), t(hidden, IMAGE_PIXELS), \
        t(classes, hidden), t(hidden)
    g_logits, g_hidden = t(batch_size, classes), t(batch_size, hidden)
    shapes = {  # name: (operands, m, k, n) for an (m, k) @ (k, n) product
        "forward 1 (128x784 @ 784x512)": ((x, w1.t(), b1), batch_size, IMAGE_PIXELS, hidden),
        "forward 2 (128x512 @ 512x10)": ((h, w2.t()), batch_size, hidden, classes),
        "grad W2 (10x128 @ 128x512)": ((g_logits.t(), h), classes, batch_size, hidden),
        "grad hidden (128x10 @ 10x512)": ((g_logits, w2), batch_size, classes, hidden),
        "grad W1 (512x128 @ 128x784)": ((g_hidden.t(), x), hidden, batch_size, IMAGE_PIXELS),
    }
    rows = {}
    for name, (operands, m, k, n) in shapes.items():
        libraries = {library: best_time(lambda product=_product(device, library): product(*operands), device,
                                        repeats=repeats) for library in floor_libraries(device)}
        seconds = min(libraries.values())
        rows[name] = {"seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9, "libraries": libraries}
    step = sum(row["seconds"] for row in rows.values())
    forward = sum(rows[name]["seconds"] for name in list(shapes)[:2])
    steps = -(-TRAIN_IMAGES // batch_size)
    validation_batches = -(-TEST_IMAGES // batch_size)
    return {"per_shape": rows, "step_seconds": step, "steps": steps,
            "epoch_seconds": steps * step + validation_batches * forward}


def sequenced_floor(device: torch.device, batch_size: int = 128, hidden: int = 512, classes: int = 10,
                    batches: int = 16, repeats: int = 7) -> float:
    """Seconds per epoch of the same five products called as a training step calls them.

    In step order, each step on a new batch and gradient (``batches`` of them, in
    turn), through the library the compiled step uses here, where :func:`matmul_floor`
    repeats one product on the same operands. On a
    CPU whose per-core cache cannot hold a step's operands, this is the slower of the
    two, and it is what the products of a real step cost at best.
    """
    def t(*shape):
        return torch.rand(*shape, device=device)

    w1, b1, w2 = t(hidden, IMAGE_PIXELS), t(hidden), t(classes, hidden)
    product = _step_product(device)
    inputs = itertools.cycle([(t(batch_size, IMAGE_PIXELS), t(batch_size, classes), t(batch_size, hidden))
                              for _ in range(batches)])

    def step():
        x, g_logits, g_hidden = next(inputs)
        h = product(x, w1.t(), b1)
        product(h, w2.t())
        product(g_logits.t(), h)
        product(g_logits, w2)
        product(g_hidden.t(), x)

    steps = -(-TRAIN_IMAGES // batch_size)
    validation_forward = torch.rand(batch_size, IMAGE_PIXELS, device=device)
    validation = best_time(lambda: product(product(validation_forward, w1.t(), b1), w2.t()), device, repeats=repeats)
    return steps * best_time(step, device, calls=batches * 3, repeats=repeats) + \
        -(-TEST_IMAGES // batch_size) * validation
