"""The fused CPU RMSprop kernel: its arithmetic, bit for bit; its distance from the eager update;
its build (cached, atomic, private) and the fallback where it cannot be built."""

import configparser
import os
import stat
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import REPO, run_command
from torch_mnist.model import kernels
from torch_mnist.errors import Note
from torch_mnist.model.kernels import KernelUnavailable, fused_rmsprop
from torch_mnist.model.optim import FLT_MIN, RMSprop, rmsprop_update

LR, RHO, EPS = 1e-3, 0.9, 1e-7


def _state(seed: int = 0, size: int = 50_000):
    """Parameters, gradients and square averages of every magnitude a run meets: large and tiny
    gradients, exactly zero ones (never-inked pixels), averages from zero to 1e-2."""
    generator = torch.Generator().manual_seed(seed)
    param = torch.randn(size, generator=generator) * 0.05
    magnitudes = torch.logspace(-12, 0, size)[torch.randperm(size, generator=generator)]
    grad = torch.randn(size, generator=generator) * magnitudes
    grad[:500] = 0.0
    square_avg = torch.rand(size, generator=generator) * torch.logspace(-30, -2, size)
    square_avg[250:750] = 0.0
    return param, grad, square_avg


def _fma32(a, b, c):
    """float32 fma(a, b, c) in numpy, exactly: the product is exact in float64; the sum is rounded to odd
    (from its rounded value and its exact error) so that the final rounding to float32 is the only one."""
    product, addend = a.astype(np.float64) * b.astype(np.float64), c.astype(np.float64)
    total = product + addend
    part = total - addend
    error = (product - part) + (addend - (total - part))  # total + error == product + addend, exactly
    bits = total.view(np.int64)
    bits = np.where((error != 0) & (np.sign(error) != np.sign(total)), bits - 1, bits)  # truncate toward 0
    bits = np.where(error != 0, bits | 1, bits)  # inexact: make it odd
    return bits.view(np.float64).astype(np.float32)


def _float32_formula(param, grad, square_avg, eps_inside, clamp=True):
    """The kernel's arithmetic in numpy, one IEEE float32 rounding per operation (the same on every CPU):
    v = fma((1 - rho) g, g, rho v), max(v, FLT_MIN) (``clamp``), exact sqrt, p + (-lr g) / d."""
    f32 = np.float32
    p, g, v = (t.numpy().copy() for t in (param, grad, square_avg))
    v = _fma32(f32(1 - RHO) * g, g, f32(RHO) * v)
    if clamp:
        v = np.maximum(v, f32(FLT_MIN))
    denominator = np.sqrt(v + f32(EPS)) if eps_inside else np.sqrt(v) + f32(EPS)
    p = p + (f32(-LR) * g) / denominator
    return torch.from_numpy(p), torch.from_numpy(v)


def _fused_step(param, grad, square_avg, eps_inside):
    fused_rmsprop()([param], [grad], [square_avg], LR, RHO, EPS, eps_inside, FLT_MIN)


@pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
@pytest.mark.parametrize("eps_inside", [False, True])
def test_the_kernel_computes_its_float32_formula_bit_for_bit(eps_inside):
    param, grad, square_avg = _state()
    expected_param, expected_avg = _float32_formula(param, grad, square_avg, eps_inside)
    _fused_step(param, grad, square_avg, eps_inside)
    assert torch.equal(square_avg, expected_avg)
    assert torch.equal(param, expected_param)


@pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
@pytest.mark.parametrize("eps_inside", [False, True])
def test_the_kernel_differs_from_the_eager_update_by_one_rounding_at_most(eps_inside):
    # torch's CPU sqrt is one unit in the last place (ulp) off for some inputs; the kernel's is exact.
    # A denominator one ulp apart moves the exact quotient by ~one ulp, and each side rounds it, so
    # the steps differ by at most two ulps; the new weights then by that and one rounding of their own.
    start, grad, avg = _state(seed=1)
    eager_param, eager_avg = start.clone(), avg.clone()
    fused_param, fused_avg = start.clone(), avg.clone()
    rmsprop_update([eager_param], [grad], [eager_avg], LR, RHO, EPS, eps_inside)
    _fused_step(fused_param, grad, fused_avg, eps_inside)

    def spacing(x):  # one unit in the last place of |x|
        return torch.nextafter(x.abs(), torch.tensor(float("inf"))) - x.abs()

    torch.testing.assert_close(fused_avg, eager_avg, rtol=2 ** -23, atol=0)
    step = eager_param - start
    difference = (fused_param - eager_param).abs()
    assert (difference <= 2 * spacing(step) + spacing(eager_param)).all()
    # ~1% here (MKL's sqrt); none where torch's own sqrt is exact
    assert (difference > 0).double().mean() < 0.05


@pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
@pytest.mark.parametrize("eps_inside", [False, True])
def test_raising_subnormal_averages_to_flt_min_changes_no_update(eps_inside):
    # numpy keeps subnormals (no flush-to-zero), so the unclamped formula is the plain one.
    param, grad, square_avg = _state(seed=2)
    square_avg[:2000] = torch.logspace(-45, -38, 2000)  # subnormal and just-normal averages
    grad[:2000] = torch.logspace(-25, -19, 2000)  # g**2 subnormal too
    unclamped_param, unclamped_avg = _float32_formula(param, grad, square_avg, eps_inside, clamp=False)
    assert ((unclamped_avg > 0) & (unclamped_avg < FLT_MIN)).any()  # the case the clamp exists for occurs
    _fused_step(param, grad, square_avg, eps_inside)
    assert torch.equal(param, unclamped_param)


@pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
def test_zero_and_non_finite_gradients():
    param, grad, avg = torch.ones(4), torch.tensor([0.0, float("nan"), float("inf"), 1.0]), torch.zeros(4)
    _fused_step(param, grad, avg, eps_inside=False)
    assert param[0] == 1.0  # a zero gradient never moves its weight
    assert param[1].isnan() and param[2].isnan()  # a NaN or infinite gradient is not hidden
    assert avg[0] == FLT_MIN


@pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
def test_the_kernel_refuses_tensors_it_cannot_update():
    with pytest.raises(RuntimeError, match="contiguous float32"):
        fused_rmsprop()([torch.ones(4, dtype=torch.float64)], [torch.ones(4, dtype=torch.float64)],
                        [torch.zeros(4, dtype=torch.float64)], LR, RHO, EPS, False, FLT_MIN)
    with pytest.raises(RuntimeError, match="different sizes"):
        fused_rmsprop()([torch.ones(4)], [torch.ones(3)], [torch.zeros(4)], LR, RHO, EPS, False, FLT_MIN)


class TestOptimizerChoosesItsUpdate:
    def _step(self, **options):
        param = torch.nn.Parameter(torch.ones(8))
        param.grad = torch.full((8,), 0.5)
        optimizer = RMSprop([param], **options)
        optimizer.step()
        return optimizer, param

    @pytest.mark.usefixtures("fused_kernel")  # built here, or skipped without a compiler
    def test_fused_by_default_on_the_cpu(self):
        assert self._step()[0].implementation == "fused"

    def test_fused_false_keeps_the_eager_update(self):
        assert self._step(fused=False)[0].implementation == "foreach"

    def test_tensors_the_kernel_cannot_take_use_the_eager_update(self):
        param = torch.nn.Parameter(torch.ones(8, 8).t())  # not contiguous
        param.grad = torch.ones(8, 8)
        optimizer = RMSprop([param])
        optimizer.step()
        assert optimizer.implementation == "foreach"

    def test_compiled_and_fused_together_are_refused(self):
        with pytest.raises(ValueError, match="choose one"):
            RMSprop([torch.nn.Parameter(torch.ones(2))], compiled=True, fused=True)

    def test_without_the_kernel_one_note_then_the_eager_update(self, monkeypatch):
        def unavailable():
            raise KernelUnavailable("cannot run the C++ compiler (no such file)")

        monkeypatch.setattr("torch_mnist.model.optim.fused_rmsprop", unavailable)
        param = torch.nn.Parameter(torch.ones(8))
        optimizer = RMSprop([param])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                param.grad = torch.full((8,), 0.5)
                optimizer.step()
        notes = [w for w in caught if issubclass(w.category, Note)]
        assert len(notes) == 1 and "cannot run the C++ compiler" in str(notes[0].message)
        assert optimizer.implementation == "foreach"

    def test_fused_true_without_the_kernel_is_an_error(self, monkeypatch):
        def unavailable():
            raise KernelUnavailable("cannot run the C++ compiler (no such file)")

        monkeypatch.setattr("torch_mnist.model.optim.fused_rmsprop", unavailable)
        with pytest.raises(KernelUnavailable, match=r"C\+\+ compiler"):
            self._step(fused=True)


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """$CXX as a script that writes its -o file and counts its calls: the build's logic in milliseconds."""
    script = tmp_path / "fake-c++"
    calls = tmp_path / "calls"
    script.write_text(f'#!/bin/sh\necho x >> "{calls}"\nwhile [ "$1" != "-o" ]; do shift; done\n'
                      'echo "not a library" > "$2"\n')
    script.chmod(0o755)
    monkeypatch.setenv("CXX", str(script))
    return lambda: len(calls.read_text().splitlines()) if calls.exists() else 0


class TestBuild:
    def test_built_once_then_reused(self, tmp_path, fake_compiler):
        folder = tmp_path / "cache"
        folder.mkdir()
        first = kernels.compile_kernel(folder)
        assert kernels.compile_kernel(folder) == first and fake_compiler() == 1
        assert sorted(p.name for p in folder.iterdir()) == [first.name]  # no temporary left behind

    def test_a_failing_compiler_is_one_line_and_leaves_nothing(self, tmp_path, monkeypatch):
        failing = tmp_path / "failing-c++"
        failing.write_text('#!/bin/sh\necho "k.cpp:1: fatal error: torch/library.h: No such file" >&2\nexit 1\n')
        failing.chmod(0o755)
        monkeypatch.setenv("CXX", str(failing))
        folder = tmp_path / "cache"
        folder.mkdir()
        with pytest.raises(KernelUnavailable, match=r"the C\+\+ compiler failed \(k.cpp:1: fatal error") as caught:
            kernels.compile_kernel(folder)
        assert "\n" not in str(caught.value)
        assert list(folder.iterdir()) == []

    def test_no_compiler_at_all(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        (tmp_path / "cache").mkdir()
        with pytest.raises(KernelUnavailable, match=r"cannot run the C\+\+ compiler"):
            kernels.compile_kernel(tmp_path / "cache")

    def test_a_file_under_the_kernels_name_that_does_not_load_is_rebuilt_once(self, tmp_path, fake_compiler):
        folder = tmp_path / "cache"
        folder.mkdir()
        kernels.kernel_file(folder).write_text("garbage")
        with pytest.raises(KernelUnavailable, match="does not load"):
            kernels.load(folder)  # the fake compiler's output does not load either
        assert fake_compiler() == 1

    def test_an_installation_without_the_source_is_one_line(self, tmp_path, monkeypatch):
        monkeypatch.setattr(kernels, "SOURCE", tmp_path / "missing.cpp")
        with pytest.raises(KernelUnavailable, match="the kernel's source cannot be read"):
            kernels.compile_kernel(tmp_path)

    def test_the_source_ships_with_the_package(self):
        config = configparser.ConfigParser()
        config.read(REPO / "setup.cfg")
        patterns = [p.strip() for p in config["options.package_data"]["torch_mnist"].split(",")]
        assert any(kernels.SOURCE.match(pattern) for pattern in patterns)

    def test_the_name_changes_with_the_compiler_flags(self, tmp_path, monkeypatch):
        before = kernels.kernel_file(tmp_path)
        monkeypatch.setenv("CXX", "clang++")
        assert kernels.kernel_file(tmp_path) != before

    def test_only_a_private_cache_folder_is_used(self, tmp_path):
        private = tmp_path / "mine"
        assert kernels.private_folder(private)  # created, mode 700
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # anyone could put a library there for us to load
        assert not kernels.private_folder(shared)

    def test_cache_folder_from_the_environment(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TORCH_MNIST_CACHE", str(tmp_path / "c"))
        assert kernels.cache_dir() == tmp_path / "c"
        monkeypatch.delenv("TORCH_MNIST_CACHE")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
        assert kernels.cache_dir() == tmp_path / "x" / "torch_mnist"


@pytest.mark.compile
@pytest.mark.usefixtures("fused_kernel")
def test_a_fresh_process_replaces_a_broken_file_under_the_kernels_name(tmp_path):
    # A real compiler run (~15 s) in a fresh interpreter: the file under the kernel's name does not
    # load (an interrupted copy, a full disk), so it is rebuilt, and the update then runs.
    cache = tmp_path / "cache"
    env = {**os.environ, "TORCH_MNIST_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    probe = ("from torch_mnist.model.kernels import fused_rmsprop, kernel_file, cache_dir\n"
             "import torch\n"
             "path = kernel_file(cache_dir())\n"
             "cache_dir().mkdir(mode=0o700)\n"
             "path.write_text('garbage')\n"
             "p, g, v = torch.ones(3), torch.ones(3), torch.zeros(3)\n"
             "fused_rmsprop()([p], [g], [v], 1e-3, 0.9, 1e-7, False, torch.finfo(torch.float32).tiny)\n"
             "print(path.name, path.read_bytes()[:4] == b'\\x7fELF', *p.tolist())\n")
    result = run_command([sys.executable, "-c", probe], env=env)
    assert result.returncode == 0, result.stderr
    name, is_library, *param = result.stdout.split()
    assert is_library == "True"
    expected, _ = _float32_formula(torch.ones(3), torch.ones(3), torch.zeros(3), eps_inside=False)
    assert [float(x) for x in param] == expected.tolist()
    assert [p.name for p in cache.iterdir()] == [name]  # no temporary left behind
