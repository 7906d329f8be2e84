"""Evaluate a checkpoint on the MNIST test set: python scripts/evaluate.py --checkpoint ckpt.pt."""

from torch_mnist.cli import evaluate_main, script

if __name__ == "__main__":
    script(evaluate_main)
