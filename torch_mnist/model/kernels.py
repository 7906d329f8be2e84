"""The fused CPU RMSprop update (``csrc/rmsprop.cpp``), compiled on first use and cached.

The kernel is built once per machine, torch version and compiler flags (~15 s
with g++ on two cores) into ``$TORCH_MNIST_CACHE`` (default
``~/.cache/torch_mnist``), and loaded as the torch operator
``torch.ops.torch_mnist.rmsprop_update_``. Where it cannot be built (no C++
compiler, headers that do not compile) :func:`fused_rmsprop` raises
:class:`KernelUnavailable` with the reason, and the optimizer keeps torch's
own foreach operations.
"""

import functools
import hashlib
import os
import platform
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Union

import torch

from ..errors import UserError, one_line

SOURCE = Path(__file__).parents[1] / "csrc" / "rmsprop.cpp"  # torch_mnist/csrc, shipped as package data
BUILD_TIMEOUT_S = 600  # a cold build takes ~15 s; a compiler that hangs must not hang training


class KernelUnavailable(UserError):
    """The fused kernel cannot be built or loaded here; the message says why, in one line."""


def cache_dir() -> Path:
    """Where built kernels are kept: ``$TORCH_MNIST_CACHE``, else ``$XDG_CACHE_HOME/torch_mnist``, else
    ``~/.cache/torch_mnist``."""
    if os.environ.get("TORCH_MNIST_CACHE"):
        return Path(os.environ["TORCH_MNIST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torch_mnist"


def compile_command(source: Path, output: Path) -> List[str]:
    """The compiler invocation for the kernel: ``$CXX`` (default ``c++``) against this torch's headers."""
    torch_root = Path(torch.__file__).parent
    flags = ["-O3", "-std=c++20", "-shared", "-fPIC",
             # No contraction of a * b + c into one rounding beyond the fma the source asks for,
             # and no errno from sqrt (which would stop vectorization).
             "-ffp-contract=off", "-fno-math-errno",
             f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    if platform.machine() in ("x86_64", "AMD64") and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]  # what torch's own kernels use on this CPU; without them fma is a libm call
    return [os.environ.get("CXX", "c++"), *flags, f"-I{torch_root / 'include'}", str(source), "-o", str(output),
            f"-L{torch_root / 'lib'}", f"-Wl,-rpath,{torch_root / 'lib'}", "-lc10", "-ltorch_cpu"]


def kernel_file(folder: Path) -> Path:
    """The cached library's path: named after everything that shapes the binary, so a change rebuilds."""
    key = hashlib.sha256()
    try:
        key.update(SOURCE.read_bytes())
    except OSError as e:  # an installation without its package data
        raise KernelUnavailable(f"the kernel's source cannot be read ({one_line(e)})") from None
    command = compile_command(SOURCE, Path("out"))
    key.update("\0".join([torch.__version__, sys.version, *command]).encode())
    return folder / f"rmsprop-{key.hexdigest()[:16]}.so"


def compile_kernel(folder: Path) -> Path:
    """The kernel library in ``folder``, compiled unless already there.

    Compiled to a private temporary name and renamed into place, so concurrent
    builds (two torchrun ranks) and interrupted ones never leave a half-written
    library under the final name.
    """
    target = kernel_file(folder)
    if target.exists():
        return target
    handle, temporary = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=folder)
    os.close(handle)
    try:
        try:
            result = subprocess.run(compile_command(SOURCE, Path(temporary)), capture_output=True, text=True,
                                    timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KernelUnavailable(f"cannot run the C++ compiler ({one_line(e)})") from None
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines()
            raise KernelUnavailable(f"the C++ compiler failed ({errors[0].strip() if errors else 'no message'})")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def private_folder(folder: Path) -> bool:
    """Whether ``folder`` is ours alone: a library loaded from a folder others can write to runs their code."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
    except OSError:
        return False
    return (info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and os.access(folder, os.W_OK))


def fused_rmsprop() -> Callable:
    """``torch.ops.torch_mnist.rmsprop_update_``, built and loaded on the first call.

    Raises :class:`KernelUnavailable` where it cannot be had; the build is tried once per process.
    A cache folder that is not private to this user is not used: the library is then built in a
    temporary folder for this process only.
    """
    loaded = _load_once()
    if isinstance(loaded, KernelUnavailable):
        raise KernelUnavailable(str(loaded))
    return loaded


@functools.lru_cache(maxsize=None)
def _load_once() -> Union[Callable, KernelUnavailable]:
    try:
        if not hasattr(torch.ops.torch_mnist, "rmsprop_update_"):
            folder = cache_dir()
            if private_folder(folder):
                load(folder)
            else:
                with tempfile.TemporaryDirectory(prefix="torch_mnist-kernel-") as scratch:
                    load(Path(scratch))
    except KernelUnavailable as e:
        return e
    return torch.ops.torch_mnist.rmsprop_update_


def load(folder: Path) -> None:
    """Build (if needed) and load the library; a cached file that does not load is rebuilt once."""
    path = compile_kernel(folder)
    try:
        torch.ops.load_library(str(path))
    except OSError:  # truncated or foreign file under our name: build it again
        path.unlink(missing_ok=True)
        try:
            torch.ops.load_library(str(compile_kernel(folder)))
        except OSError as e:
            raise KernelUnavailable(f"the built kernel does not load ({one_line(e)})") from None
