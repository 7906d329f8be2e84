"""Speed measurements in one run: the matmul floor, both data paths, evaluation, memory.

Every time is reported as a ratio to the floor measured in the same run, so
the figures compare on a noisy or shared machine.
"""

import itertools
import math
import resource
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

from ..data.batches import InMemoryBatches, TensorSplit, decode, make_batches
from ..config import DISTORTIONS, TrainConfig
from ..data.distort import DistortedBatches, Distorter, distortion_seed
from ..data.mnist import load_mnist
from ..training.epoch import EpochMeter, evaluate, train_one_epoch, training_step
from ..model.mlp import MLP
from ..model.optim import rmsprop_update
from ..recipe import build, normalization_of
from ..training import onednn
from ..training.compiled import CompiledStep
from ..training.runtime import cpu_name, fast_cpu_math, native_bf16_cpu
from .floor import TEST_IMAGES, _sync, best_time, matmul_floor, sequenced_floor, step_library



@dataclass(frozen=True)
class Variant:
    """The fast path with train.py's speed options changed."""

    label: str
    config: Dict = field(default_factory=dict)  # TrainConfig overrides


VARIANTS = {"eager": Variant("fast path with eager steps (--no-compile)", {"compile": False}),
            "bf16": Variant("fast path with --amp bf16 (bf16 matmuls, compiled step)", {"amp": "bf16"}),
            "eager-bf16": Variant("fast path with --amp bf16 and eager steps", {"amp": "bf16", "compile": False}),
            "distorted": Variant("fast path with every digit distorted (--distort affine elastic pen)",
                                 {"distort": DISTORTIONS})}


def epoch_timer(train_batches, test_batches, device: torch.device,
                config: TrainConfig = TrainConfig()) -> Tuple[Callable[[], float], Callable[[], str]]:
    """A function timing one whole epoch (training + validation) of a fresh run of ``config``, as the
    training loop runs it, and one saying which step ran ("compiled" or "eager")."""
    recipe = build(config, device)
    step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn, recipe.autocast_dtype) \
        if config.compile else None

    epochs = itertools.count(1)

    def one_epoch() -> float:
        _sync(device)
        start = time.perf_counter()
        if isinstance(train_batches, DistortedBatches):  # a new seed each epoch, as the training loop's
            train_batches.start_epoch(distortion_seed(config.seed, next(epochs), 0))
        train_one_epoch(recipe.model, train_batches, recipe.optimizer, device, loss_fn=recipe.loss_fn,
                        autocast_dtype=recipe.autocast_dtype, step=step)
        with onednn.linear_layers_through_onednn():  # as the training loop evaluates
            evaluate(recipe.model, test_batches, device, loss_fn=recipe.loss_fn)
        _sync(device)
        return time.perf_counter() - start

    return one_epoch, lambda: step.implementation if step else "eager"


def interleaved(timers: Dict[str, Callable[[], float]], repeats: int, device: torch.device) -> Dict[str, Dict]:
    """``repeats`` rounds of one timed epoch of each timer in turn, each just after a fresh floor.

    Each timer first runs one untimed epoch (warming caches and allocators, and compiling
    where --compile is on). Reported per timer: the median time and the median of time /
    floor. Taking turns, rather than one block of epochs after another, lets a shared
    machine whose speed drifts during the run slow every contender alike.
    """
    runs = {name: [] for name in timers}
    with fast_cpu_math(device):
        for one_epoch in timers.values():
            one_epoch()
        for _ in range(repeats):
            for name, one_epoch in timers.items():
                floor = matmul_floor(device, repeats=3)["epoch_seconds"]
                runs[name].append({"seconds": one_epoch(), "floor_seconds": floor})
    return {name: {"runs": timed, "median": statistics.median(run["seconds"] for run in timed),
                   "x_floor": statistics.median(run["seconds"] / run["floor_seconds"] for run in timed)}
            for name, timed in runs.items()}


def profile_epoch(train_batches, device: torch.device, top: int = 10,
                  config: TrainConfig = TrainConfig()) -> List[Dict]:
    """Where one fast-path training epoch spends its time: torch.profiler's top ops by self time.

    The profiler adds its own overhead per op, so read the shares, not the totals.
    """
    from torch.profiler import ProfilerActivity, profile

    recipe = build(config, device)
    step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn) if config.compile else None
    with fast_cpu_math(device):
        train_one_epoch(recipe.model, train_batches, recipe.optimizer, device, loss_fn=recipe.loss_fn,
                        step=step)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_one_epoch(recipe.model, train_batches, recipe.optimizer, device, loss_fn=recipe.loss_fn, step=step)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls_per_step": e.count / len(train_batches),
             "ms_per_step": e.self_cpu_time_total / 1000 / len(train_batches),
             "share": e.self_cpu_time_total / total} for e in ranked]


def update_alone(device: torch.device, config: TrainConfig = TrainConfig()) -> Dict[str, float]:
    """Milliseconds of one RMSprop update of the model's parameters outside training: the eager foreach
    update, and the same function through ``torch.compile`` (what the compiled step's fused update costs).

    The gradients stay the same from call to call and hot in the cache, so this is the update's own
    cost; inside a step it reads gradients the backward pass has just written.
    """
    recipe = build(config, device)
    params = [p.detach() for p in recipe.model.parameters()]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    averages = [recipe.optimizer.square_avg(p) for p in params]
    group = recipe.optimizer.param_groups[0]
    arguments = (params, grads, averages, group["lr"], group["rho"], group["eps"], group["eps_placement"] == "inside")
    compiled = torch.compile(rmsprop_update, fullgraph=True, dynamic=False)
    with fast_cpu_math(device):
        return {name: 1000 * best_time(lambda: update(*arguments), device, calls=200, repeats=5)
                for name, update in (("foreach", rmsprop_update), ("compiled", compiled))}


PHASES = ("batch", "forward and loss", "backward", "update", "bookkeeping")


def step_phases(train_batches, device: torch.device, config: TrainConfig = TrainConfig()) -> Dict[str, float]:
    """Milliseconds per step of each phase of an eager training step (``--no-compile``), over one epoch
    after a warm-up one: where the time goes that the compiled step saves.

    The loop's own :func:`~torch_mnist.training.epoch.training_step`, unchanged: its loss and its optimizer
    are wrapped to read a clock (and, on CUDA, synchronise) when the loss is computed and when the update
    starts and ends. Unlike the profiler, nothing is added to any operation, so the phases add up to the
    real step.
    """
    recipe = build(config, device)
    model, optimizer, loss_fn = recipe.model, recipe.optimizer, recipe.loss_fn
    totals = dict.fromkeys(PHASES, 0.0)
    times: List[float] = []

    def timed_loss(*args, **kwargs):
        loss = loss_fn(*args, **kwargs)
        times.append(_clock(device))  # forward and loss done
        return loss

    with fast_cpu_math(device):
        train_one_epoch(model, train_batches, optimizer, device, loss_fn=loss_fn)  # warm-up
        meter, batches, timed = EpochMeter(device), iter(train_batches), _TimedUpdate(optimizer, times, device)
        for step in range(len(train_batches)):
            times[:] = [time.perf_counter()]
            images, labels = next(batches)
            times.append(_clock(device))
            loss, correct = training_step(model, timed, timed_loss, images, labels)
            meter.record(step, loss, correct, len(labels))
            if device.type == "cpu":
                math.isfinite(loss.item())  # the loop's divergence check
            times.append(_clock(device))
            for phase, start, end in zip(PHASES, times, times[1:]):
                totals[phase] += end - start
    return {phase: 1000 * seconds / len(train_batches) for phase, seconds in totals.items()}


class _TimedUpdate:
    """An optimizer that reads the clock as its update starts (the backward is done) and ends."""

    def __init__(self, optimizer: torch.optim.Optimizer, times: List[float], device: torch.device):
        self.optimizer, self.times, self.device = optimizer, times, device

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.times.append(_clock(self.device))
        self.optimizer.step()
        self.times.append(_clock(self.device))


def _clock(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


def evaluation_throughput(test_batches, device: torch.device) -> float:
    """Test images per second through :func:`evaluate` on the fast path."""
    model = MLP().to(device)
    with onednn.linear_layers_through_onednn():
        seconds = best_time(lambda: evaluate(model, test_batches, device), device, calls=3, repeats=5)
    return test_batches.num_samples / seconds


def peer_timers(train_set: TensorSplit, test_set: TensorSplit) -> Dict[str, Callable[[], float]]:
    """Each other framework's epoch timer for the same program, by result key, where it is installed:
    Keras 3 on torch, Keras 3 on JAX (a process of its own: close it after), JAX + optax."""
    from .peers import jax_peer, keras_jax_peer, keras_peer

    timers = {"keras_epoch_seconds": keras_peer(train_set, test_set),
              "keras_jax_epoch_seconds": keras_jax_peer(train_set, test_set),
              "jax_epoch_seconds": jax_peer(train_set, test_set)}
    return {key: timer for key, timer in timers.items() if timer}


FAST_PEERS = ("keras_jax_epoch_seconds", "jax_epoch_seconds")  # ~1 s an epoch: timed in turn with ours


def deployment_speed(repeats: int = 5) -> Dict:
    """Single-image latency and 10,000-image throughput of the reference model with its normalization
    (raw pixels in), eager PyTorch beside onnxruntime, on the CPU. Empty without the export extra."""
    import tempfile

    from ..errors import UserError
    from ..deploy.export import Deployable, write_onnx

    cpu = torch.device("cpu")
    config = TrainConfig()
    deployable = Deployable(build(config, cpu).model, normalization_of(config)).eval()
    one, many = torch.rand(1, 1, 28, 28) * 255, torch.rand(TEST_IMAGES, 1, 28, 28) * 255
    with tempfile.TemporaryDirectory() as folder:
        try:
            run_onnx, _ = write_onnx(deployable, one.clone(), Path(folder) / "model.onnx", {})
        except UserError:
            return {}
        with torch.no_grad():
            rows = {"eager PyTorch": (lambda: deployable(one), lambda: deployable(many)),
                    "onnxruntime": (lambda: run_onnx(one), lambda: run_onnx(many))}
            return {name: {"latency_ms": 1000 * best_time(single, cpu, calls=200, repeats=repeats),
                           "images_per_second": TEST_IMAGES / best_time(batch, cpu, calls=3, repeats=repeats)}
                    for name, (single, batch) in rows.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_benchmark(data_root: Path, device: torch.device, repeats: int = 5, loader_repeats: int = 2,
                  config: TrainConfig = TrainConfig(), variants: tuple = tuple(VARIANTS),
                  deployment: bool = True) -> Dict:
    """All measurements of one run, as a JSON-ready dict. MNIST is decoded once and shared.

    ``variants`` names the speed options (keys of :data:`VARIANTS`) to time besides the default fast path;
    ``deployment`` adds the exported model's latency and throughput (eager beside onnxruntime).
    """
    floor = matmul_floor(device)
    normalization = normalization_of(config)
    train_set = decode(load_mnist(data_root, True, dataset=config.dataset), normalization, device)
    test_set = decode(load_mnist(data_root, False, dataset=config.dataset), normalization, device)

    def shuffled(distort: tuple = ()):
        return _shuffled(train_set, config, distort)

    in_order = InMemoryBatches(test_set, config.batch_size)
    contenders = {"fast": epoch_timer(shuffled(), in_order, device, config)}
    with fast_cpu_math(device):
        contenders["fast"][0]()  # an epoch before any variant exists, for the fast path's own peak memory
    peak_fast_path = peak_rss_mb()
    for name in variants:  # each a fresh run on its own batches, timed in turn with the others
        variant = VARIANTS[name]
        variant_config = replace(config, **variant.config)
        contenders[name] = epoch_timer(shuffled(variant_config.distort), in_order, device, variant_config)
    peers = peer_timers(train_set, test_set) if loader_repeats else {}
    timings, peer_timings = _take_turns(contenders, peers, repeats, loader_repeats, device)
    for name, (_, implementation) in contenders.items():
        timings[name]["step"] = implementation()
    result = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the widest vector kernels torch uses
        "native_bf16": native_bf16_cpu(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "floor": floor,
        "step_products": step_library(device),
        "sequenced_floor_seconds": sequenced_floor(device),
        "fast_epoch_seconds": timings.pop("fast"),
        "peak_rss_mb_fast_path": peak_fast_path,
        "eval_images_per_second": evaluation_throughput(in_order, device),
        "profile": profile_epoch(shuffled(), device, config=config),
        "step_phases_ms": step_phases(shuffled(), device, replace(config, compile=False)),
        "update_alone_ms": update_alone(device, config),
        "variants": timings,
        "deployment": deployment_speed() if deployment else {},
    }
    if loader_repeats:
        result["dataloader_epoch_seconds"] = _dataloader_epoch(data_root, device, config, loader_repeats)
    result.update(peer_timings)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _dataloader_epoch(data_root: Path, device: torch.device, config: TrainConfig, repeats: int) -> Dict:
    """The same batches through a torchvision DataLoader with its per-image transform, ``repeats`` epochs."""
    def batches(train: bool):
        return make_batches(data_root, normalization_of(config), train=train, batch_size=config.batch_size,
                            device=device, loader="dataloader", dataset=config.dataset,
                            generator=torch.Generator().manual_seed(config.seed) if train else None)
    loader_epoch, _ = epoch_timer(batches(True), batches(False), device, config)
    return interleaved({"loader": loader_epoch}, repeats, device)["loader"]


def _shuffled(train_set: TensorSplit, config: TrainConfig, distort: tuple = ()):
    """The same seeded training batches for every measurement; each image redrawn where ``distort`` names
    distortions, as train.py --distort does it."""
    generator = torch.Generator().manual_seed(config.seed)
    if distort:
        distorter = Distorter(train_set.images, distort, normalization_of(config).background(),
                              compile=config.compile)
        return DistortedBatches(train_set, config.batch_size, generator, distorter)
    return InMemoryBatches(train_set, config.batch_size, generator)


def _take_turns(contenders: Dict, peers: Dict, repeats: int, loader_repeats: int, device: torch.device) -> tuple:
    """Our contenders' timings and the peers': the peers as fast as ours take turns with ours, epoch by
    epoch; the slow ones (Keras on torch: several seconds an epoch) after, ``loader_repeats`` times."""
    try:
        timers = {name: timer for name, (timer, _) in contenders.items()}
        timings = interleaved({**timers, **{key: peers[key] for key in FAST_PEERS if key in peers}}, repeats, device)
        slow_peers = {key: timer for key, timer in peers.items() if key not in FAST_PEERS}
        peer_timings = {key: timings.pop(key) for key in FAST_PEERS if key in timings}
        if slow_peers:
            peer_timings.update(interleaved(slow_peers, loader_repeats, device))
    finally:
        for timer in peers.values():
            getattr(timer, "close", lambda: None)()  # the Keras-on-JAX process
    return timings, peer_timings
