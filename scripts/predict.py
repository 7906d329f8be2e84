"""Predict the digits in your own images: python scripts/predict.py --checkpoint ckpt.pt digit.png."""

from torch_mnist.cli import script
from torch_mnist.cli_results import predict_main

if __name__ == "__main__":
    script(predict_main)
