"""Train the reference MLP on MNIST: python scripts/train.py --help."""

from torch_mnist.cli import train_main, script

if __name__ == "__main__":
    script(train_main)
