"""scripts/prepare_data.py: install local MNIST-like idx files into the data root, validated."""

import argparse
from pathlib import Path
from typing import List, Optional

from ..config import DATASET_NAMES
from ..data.registry import resolve_data_root
from ..errors import UserError
from .common import Parser, data_flag


def parser() -> argparse.ArgumentParser:
    p = Parser("Install local MNIST-like idx files (gzip'd or not) into the data root, validated.")
    p.add_argument("--dataset", choices=DATASET_NAMES, required=True,
                   help=f"which dataset the files hold: {', '.join(DATASET_NAMES)} (required)")
    p.add_argument("--source", required=True, help="folder holding the four idx files, .gz or not (required)")
    data_flag(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not Path(args.source).is_dir():
        raise UserError(f"--source {args.source}: not a folder")
    from ..data.prepare import prepare_dataset  # the heavy imports, after the flags

    folder = prepare_dataset(args.dataset, Path(args.source), resolve_data_root(args.data_dir))
    print(f"installed and validated: {folder}")
    return 0
