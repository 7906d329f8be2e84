"""Install local MNIST-like idx files into the data root: python scripts/prepare_data.py --dataset NAME --source DIR."""

import argparse
from pathlib import Path

from torch_mnist.cli import script
from torch_mnist.config import DATASET_NAMES
from torch_mnist.data import resolve_data_root
from torch_mnist.prepare import prepare_dataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", choices=DATASET_NAMES, required=True)
    p.add_argument("--source", required=True, help="folder holding the four idx files (.gz or not)")
    p.add_argument("--data-dir", help="data root (default: $TORCH_MNIST_DATA, else ./data)")
    args = p.parse_args(argv)
    folder = prepare_dataset(args.dataset, Path(args.source), resolve_data_root(args.data_dir))
    print(f"installed and validated: {folder}")
    return 0


if __name__ == "__main__":
    script(main)
