"""Draw a run's curves.png and confusion.png: python scripts/plot.py ckpt.json."""

from torch_mnist.cli import script
from torch_mnist.cli_results import plot_main

if __name__ == "__main__":
    script(plot_main)
