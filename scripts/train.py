"""Train the reference MLP on MNIST: python scripts/train.py --help."""

from torch_mnist.commands.common import script
from torch_mnist.commands.train import main

if __name__ == "__main__":
    script(main)
