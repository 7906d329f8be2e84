"""Is it luck? N seeds of the reference run beside the reference: python scripts/reproduce.py --seeds 5."""

from torch_mnist.commands.common import script
from torch_mnist.commands.reproduce import main

if __name__ == "__main__":
    script(main)
