"""Predict the digits in your own images: python scripts/predict.py --checkpoint ckpt.pt digit.png."""

from torch_mnist.commands.common import script
from torch_mnist.commands.predict import main

if __name__ == "__main__":
    script(main)
