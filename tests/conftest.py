"""Shared fixtures: a seed, a tiny synthetic MNIST as real idx files, the real data root."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    np.random.seed(0)


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


def run_script(name: str, *args, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run scripts/<name>.py the way a user does, capturing its output."""
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def assert_one_line_error_in_process(main, args, capsys, *fragments: str) -> None:
    """:func:`assert_one_line_error` for a script's ``main`` run in this process, as its
    ``script()`` wrapper runs it, without the seconds of a new interpreter importing torch."""
    from torch_mnist.cli import run_main

    code = run_main(main, [str(arg) for arg in args])
    captured = capsys.readouterr()
    assert_one_line_error(subprocess.CompletedProcess(args, code, captured.out, captured.err), *fragments)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, exactly one line on stderr containing every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
