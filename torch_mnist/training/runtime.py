"""Where and how a run executes: device selection, CPU floating-point settings, the CPU's name and bf16."""

import contextlib
import platform
from pathlib import Path
from typing import Iterator, Optional

import torch

from ..errors import UserError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; a missing device is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UserError(f"--device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@contextlib.contextmanager
def fast_cpu_math(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero while training on the CPU, as TensorFlow (so the reference) does.

    Arithmetic on denormals is several times slower. This covers the calling
    thread only: torch's OpenMP workers, created earlier, keep their own
    setting, which is why :class:`~torch_mnist.model.optim.RMSprop` also keeps its
    squared-gradient averages out of the denormal range itself. Restores
    the caller's setting afterwards.
    """
    if device.type != "cpu":
        yield
        return
    was_flushing = flushes_denormals()
    if not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


def flushes_denormals() -> bool:
    """Whether this thread flushes denormal floats to zero now (torch can set it but not report it)."""
    smallest_normal = torch.tensor(torch.finfo(torch.float32).tiny)
    return bool((smallest_normal * 0.5).item() == 0.0)


def native_bf16_cpu() -> Optional[bool]:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX); None when torch cannot tell.

    Without it, oneDNN emulates bf16 matmuls through float32 and ``--amp bf16`` only adds casts.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not all(probes):  # private helpers of torch.cpu; absent in some builds
        return None
    return any(probe() for probe in probes)


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` shows it (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
