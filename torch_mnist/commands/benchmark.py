"""scripts/benchmark.py: the fast path against the matmul floor, the DataLoader path and Keras, in one run."""

import argparse
import json
from pathlib import Path
from typing import List, Optional

from ..data.registry import resolve_data_root
from ..errors import UserError
from .common import Parser, check_outputs, data_flag, device_flag

# the keys of torch_mnist.reports.benchmark.VARIANTS (checked by the tests)
VARIANTS = ("eager", "bf16", "eager-bf16", "distorted")


def parser() -> argparse.ArgumentParser:
    p = Parser("Measure the fast path against the matmul floor, the DataLoader path, Keras 3 and JAX, in one run.")
    data_flag(p)
    device_flag(p)
    p.add_argument("--repeats", type=int, default=5, help="timed fast-path epochs (median reported; default: 5)")
    p.add_argument("--loader-repeats", type=int, default=2,
                   help="timed epochs of the slow contenders, the DataLoader path and Keras 3 on torch; 0 skips "
                        "them and the other peers (JAX, Keras 3 on JAX: timed --repeats times in turn with ours, "
                        "where installed) (default: 2)")
    p.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS),
                   help="speed options to time besides the default fast path (default: all; none: --variants)")
    p.add_argument("--no-deployment", action="store_true",
                   help="skip the exported model's rows, eager vs onnxruntime (default: measured when installed)")
    p.add_argument("--out", default="bench.json", help="where to write the JSON (default: bench.json)")
    p.add_argument("--report", metavar="BENCH.json",
                   help="measure nothing: print the tables of an earlier run's JSON, as docs/performance.md "
                        "shows them (default: measure)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.report:
        return _report(Path(args.report))
    if not 1 <= args.repeats <= 1000 or not 0 <= args.loader_repeats <= 1000:
        raise UserError(f"--repeats must be from 1 and --loader-repeats from 0, both to 1000; got {args.repeats} "
                        f"and {args.loader_repeats}")
    check_outputs({"--out": (Path(args.out), "benchmark")})  # before minutes of measuring, not after
    from ..reports.bench_tables import format_report  # the heavy imports, after the flags
    from ..reports.benchmark import run_benchmark
    from ..training.runtime import resolve_device

    result = run_benchmark(resolve_data_root(args.data_dir), resolve_device(args.device),
                           args.repeats, args.loader_repeats, variants=tuple(args.variants),
                           deployment=not args.no_deployment)
    from ..files import atomic_write

    atomic_write(Path(args.out), lambda f: f.write(json.dumps(result, indent=2).encode() + b"\n"))
    print(format_report(result))
    print(f"\nwritten: {args.out}")
    return 0


def _report(path: Path) -> int:
    """The tables of a saved run: the docs' performance figures are this output, not typed in."""
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--report {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--report {path}: not a benchmark JSON ({type(e).__name__})") from None
    from ..reports.bench_tables import format_report

    try:
        print(format_report(result))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise UserError(f"--report {path}: not a benchmark JSON written by scripts/benchmark.py") from None
    return 0
