"""scripts/benchmark.py: the fast path against the matmul floor, the DataLoader path and Keras, in one run."""

import argparse
import json
from pathlib import Path
from typing import List, Optional

from ..benchmark import VARIANTS, format_report, run_benchmark
from ..data import resolve_data_root
from ..errors import UserError
from ..runtime import resolve_device
from .common import data_flag, device_flag


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Measure the fast path against the matmul floor and the DataLoader "
                                            "path: python scripts/benchmark.py.")
    data_flag(p)
    device_flag(p)
    p.add_argument("--repeats", type=int, default=5, help="timed fast-path epochs (median reported; default: 5)")
    p.add_argument("--loader-repeats", type=int, default=2,
                   help="timed epochs of the DataLoader path and of Keras 3 (if installed); 0 skips them (default: 2)")
    p.add_argument("--variants", nargs="*", choices=tuple(VARIANTS), default=list(VARIANTS),
                   help="speed options to time besides the default fast path (default: all; none: --variants)")
    p.add_argument("--out", default="bench.json", help="where to write the JSON (default: bench.json)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.repeats <= 0 or args.loader_repeats < 0:
        raise UserError("--repeats must be positive and --loader-repeats not negative")
    result = run_benchmark(resolve_data_root(args.data_dir), resolve_device(args.device),
                           args.repeats, args.loader_repeats, variants=tuple(args.variants))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    print(f"\nwritten: {args.out}")
    return 0
