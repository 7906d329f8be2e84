"""Measure the fast path against the matmul floor and the DataLoader path: python scripts/benchmark.py."""

import argparse
import json
from pathlib import Path

from torch_mnist.benchmark import VARIANTS, format_report, run_benchmark
from torch_mnist.cli import script
from torch_mnist.data import resolve_data_root
from torch_mnist.errors import UserError
from torch_mnist.runtime import resolve_device


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-dir", help="folder holding MNIST/raw (default: $TORCH_MNIST_DATA, else ./data)")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5, help="timed fast-path epochs (median reported)")
    p.add_argument("--loader-repeats", type=int, default=2,
                   help="timed epochs of the DataLoader path and of Keras 3 (if installed); 0 skips them")
    p.add_argument("--variants", nargs="*", choices=tuple(VARIANTS), default=list(VARIANTS),
                   help="speed options to time besides the default fast path (default: all; none: --variants)")
    p.add_argument("--out", default="bench.json", help="where to write the JSON (default: bench.json)")
    args = p.parse_args(argv)
    if args.repeats <= 0 or args.loader_repeats < 0:
        raise UserError("--repeats must be positive and --loader-repeats not negative")
    result = run_benchmark(resolve_data_root(args.data_dir), resolve_device(args.device),
                           args.repeats, args.loader_repeats, variants=tuple(args.variants))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_report(result))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    script(main)
