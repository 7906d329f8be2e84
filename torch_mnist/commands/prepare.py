"""scripts/prepare_data.py: install local MNIST-like idx files into the data root, validated."""

import argparse
from pathlib import Path
from typing import List, Optional

from ..config import DATASET_NAMES
from ..data import resolve_data_root
from ..prepare import prepare_dataset
from .common import data_flag


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Install local MNIST-like idx files into the data root: "
                                            "python scripts/prepare_data.py --dataset NAME --source DIR.")
    p.add_argument("--dataset", choices=DATASET_NAMES, required=True, help="which dataset the files are")
    p.add_argument("--source", required=True, help="folder holding the four idx files (.gz or not)")
    data_flag(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    folder = prepare_dataset(args.dataset, Path(args.source), resolve_data_root(args.data_dir))
    print(f"installed and validated: {folder}")
    return 0
