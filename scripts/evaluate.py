"""Evaluate a checkpoint on the MNIST test set: python scripts/evaluate.py --checkpoint ckpt.pt."""

from torch_mnist.commands.common import script
from torch_mnist.commands.evaluate import main

if __name__ == "__main__":
    script(main)
