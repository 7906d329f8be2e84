"""Shared fixtures: a seed, a tiny synthetic MNIST as real idx files, the real data root, and the
rules every test lives by: its own signal dispositions and handlers, no network, no process left behind."""

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# Where torchvision would download from: a closed local port, so a test that expects the
# download to fail fails at once, online or offline (port 9 is "discard", never served here).
UNREACHABLE_MIRROR = "http://127.0.0.1:9/"


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True, scope="session")
def signal_dispositions():
    """Ctrl-C and SIGTERM as in an interactive shell, whatever this suite inherited.

    Started by nohup, cron, ``make test &`` or a CI runner, SIGINT arrives ignored and
    every child would inherit that. A handled signal is reset to its default in a child
    at exec, so installing Python's handlers here gives the scripts we start the
    dispositions of a terminal too.
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """Each test's SIGINT and SIGTERM handlers put back after it: a test may install its own, and a compiled
    step wraps the current ones in a relay (torch_mnist.interrupts) that would outlive the test."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def uncompiled_steps(request, monkeypatch):
    """In this process the compiled training step runs its own function uncompiled, op by op.

    Compiling costs seconds per distinct graph (tens cold), and the suite trains hundreds of small
    runs of many shapes. So the graph is left uncompiled (the same forward, torch.func backward and
    update, run op by op) except in tests marked ``compile`` or ``slow``: those compile it as users do.
    """
    if request.node.get_closest_marker("compile") or request.node.get_closest_marker("slow"):
        return
    from torch_mnist.data import distort
    from torch_mnist.training import compiled

    monkeypatch.setattr(compiled, "_new_compiled_step", lambda: compiled._step)
    monkeypatch.setattr(distort, "compiled", lambda graph: graph)  # the distortions' graph, op by op too


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """torchvision's downloads go nowhere: tests never depend on the network."""
    from torch_mnist.data.mnist import torchvision_class
    from torch_mnist.data.registry import DATASETS

    for info in DATASETS.values():
        monkeypatch.setattr(torchvision_class(info), "mirrors", [UNREACHABLE_MIRROR])


def write_idx_images(path: Path, images: np.ndarray) -> None:
    path.write_bytes(struct.pack(">IIII", 0x803, *images.shape) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def synthetic_digits(count: int, rng: np.random.Generator) -> tuple:
    """Learnable 28x28 'digits': class k lights a 6x6 block at its own place, plus noise."""
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 60, (count, 28, 28))
    for i, k in enumerate(labels):
        row, col = 3 + 7 * (k // 4), 3 + 6 * (k % 4)
        images[i, row:row + 6, col:col + 6] = rng.integers(180, 256, (6, 6))
    return images.astype(np.uint8), labels


def make_synthetic_root(root: Path, train: int = 600, test: int = 200, seed: int = 0) -> Path:
    """Write a synthetic MNIST in torchvision's layout under ``root`` and return ``root``."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        images, labels = synthetic_digits(count, rng)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    """600 training and 200 test images: 5 steps of 128 (ragged last batch), 2 test batches."""
    return make_synthetic_root(tmp_path / "synthetic")


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real MNIST files from $TORCH_MNIST_DATA; a hard failure in CI, a skip elsewhere."""
    root = os.environ.get("TORCH_MNIST_DATA")
    if root and (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        return Path(root)
    if os.environ.get("CI"):
        pytest.fail("CI must set TORCH_MNIST_DATA to a folder holding MNIST/raw")
    pytest.skip("set TORCH_MNIST_DATA to run tests on the real MNIST files")


def save_with_digest(checkpoint: dict, path: Path) -> None:
    """Write a hand-made checkpoint as torch_mnist would, digest included, so that loading gets past
    the digest to the check a test is about (a crafted file can always carry a matching digest)."""
    from torch_mnist.training.integrity import DIGEST_KEY, content_digest

    torch.save({**checkpoint, DIGEST_KEY: content_digest(checkpoint)}, path)


class Processes:
    """Processes a test started; each runs in its own process group, which teardown kills."""

    def __init__(self):
        self.started = []

    def start(self, command, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, **kwargs)
        self.started.append(process)
        return process

    def end_all(self) -> None:
        for process in self.started:
            kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """End ``process`` and everything it started (torchrun's workers, say), if still running."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone
    process.wait(timeout=30)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def processes():
    started = Processes()
    yield started
    started.end_all()


def run_command(command, timeout: float = 300, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``command`` to completion and capture its output; on a timeout or any failure,
    it and its children are killed, never left running."""
    process = subprocess.Popen([str(part) for part in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=cwd, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def trained_checkpoint(real_root, tmp_path_factory) -> Path:
    """A 2-epoch model of the real MNIST (~97% on the test set), trained once per session, with eager steps
    (whichever test asks for it first, the same model)."""
    from torch_mnist import TrainConfig, run_training

    out = tmp_path_factory.mktemp("model") / "ckpt.pt"
    run_training(TrainConfig(epochs=2, compile=False), real_root, torch.device("cpu"), out)
    return out


def run_script(name: str, *args, env=None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py the way a user does, capturing its output."""
    return run_command([sys.executable, REPO / "scripts" / f"{name}.py", *args], timeout, env, cwd)


def run_in_process(main, args, capsys) -> subprocess.CompletedProcess:
    """A script's ``main`` run in this process as its ``script()`` wrapper runs it (errors become
    one line and exit code 2), without the seconds of a new interpreter importing torch."""
    from torch_mnist.commands.common import run_main

    code = run_main(main, [str(arg) for arg in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def assert_one_line_error_in_process(main, args, capsys, *fragments: str) -> None:
    """:func:`assert_one_line_error` for a script's ``main`` run in this process."""
    assert_one_line_error(run_in_process(main, args, capsys), *fragments)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr containing every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
