"""Measure the fast path against the matmul floor and the DataLoader path: python scripts/benchmark.py."""

from torch_mnist.commands.common import script
from torch_mnist.commands.benchmark import main

if __name__ == "__main__":
    script(main)
