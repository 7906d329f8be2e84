"""Evaluate a checkpoint on the MNIST test set: python scripts/evaluate.py --checkpoint ckpt.pt."""

from torch_mnist.cli import script
from torch_mnist.cli_results import evaluate_main

if __name__ == "__main__":
    script(evaluate_main)
