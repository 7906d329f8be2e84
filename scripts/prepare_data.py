"""Install local MNIST-like idx files into the data root: python scripts/prepare_data.py --dataset NAME --source DIR."""

from torch_mnist.commands.common import script
from torch_mnist.commands.prepare import main

if __name__ == "__main__":
    script(main)
