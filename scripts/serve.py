"""Serve a page to draw a digit on: python scripts/serve.py --checkpoint ckpt.pt."""

from torch_mnist.commands.common import script
from torch_mnist.commands.serve import main

if __name__ == "__main__":
    script(main)
