"""Draw a run's curves.png and confusion.png: python scripts/plot.py ckpt.json."""

from torch_mnist.commands.common import script
from torch_mnist.commands.plot import main

if __name__ == "__main__":
    script(main)
