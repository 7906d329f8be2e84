"""scripts/reproduce.py: is 98.3% luck? N seeds of the reference run, summarized beside the reference."""

import argparse
import json
import os
from pathlib import Path
from typing import List, Optional

from ..config import KERAS_SEMANTICS, TrainConfig
from ..data.registry import resolve_data_root
from ..errors import UserError
from .common import Parser, check_distinct_paths, check_output_path, data_files, data_flag, device_flag


MAX_SEEDS = 1000  # a thousand full runs is already days of computing


def parser() -> argparse.ArgumentParser:
    p = Parser("N seeds of the reference run, summarized beside the reference.")
    p.add_argument("--seeds", type=int, default=5, help="number of runs, seeds 0..N-1 (default: 5)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs,
                   help=f"epochs of each run (default: {TrainConfig.epochs})")
    p.add_argument("--keras-semantics", choices=tuple(KERAS_SEMANTICS), default=TrainConfig.keras_semantics,
                   help=f"as train.py's (default: {TrainConfig.keras_semantics})")
    data_flag(p)
    device_flag(p)
    p.add_argument("--out-dir", default="runs/reproduce",
                   help="checkpoints seed<N>.pt (with .json histories), summary.json and seeds.png go here; "
                        "created if missing; earlier seed checkpoints there are never replaced (default: "
                        "runs/reproduce)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not 2 <= args.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be from 2 (to measure a spread) to {MAX_SEEDS}, got {args.seeds}")
    config = TrainConfig(epochs=args.epochs, keras_semantics=args.keras_semantics).validate()
    out_dir = Path(args.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out-dir {out_dir}: cannot be created ({e.strerror})") from None
    check_output_path(out_dir / "summary.json", "--out-dir")  # before the first of N runs, not after it
    earlier = [out_dir / f"seed{seed}{suffix}" for seed in range(args.seeds) for suffix in (".pt", ".json")
               if os.path.lexists(out_dir / f"seed{seed}{suffix}")]
    if earlier:  # hours of runs: never replaced without being asked
        raise UserError(f"--out-dir {out_dir} already holds {', '.join(p.name for p in earlier[:3])}"
                        f"{' and more' if len(earlier) > 3 else ''} from an earlier run; choose another --out-dir "
                        "or remove them first")
    writes = {f"seed {seed}'s {kind}": out_dir / f"seed{seed}{suffix}" for seed in range(args.seeds)
              for kind, suffix in (("checkpoint", ".pt"), ("history", ".json"))}
    check_distinct_paths(data_files(args.data_dir),
                         {**writes, "summary.json": out_dir / "summary.json", "seeds.png": out_dir / "seeds.png"})
    from ..reports.plots import plot_seed_band  # the heavy imports, after the flags
    from ..training.progress import Progress
    from ..reports.reproduce import final_position, reference_z_scores, run_seeds, summarize, summary_table
    from ..training.runtime import resolve_device

    histories = run_seeds(config, list(range(args.seeds)), resolve_data_root(args.data_dir),
                          resolve_device(args.device), out_dir, Progress("quiet"))
    summary = summarize(histories)
    scores = reference_z_scores(summary)
    final = final_position(histories)
    (out_dir / "summary.json").write_text(json.dumps(
        {"config": config.to_dict(), "seeds": args.seeds, "histories": histories, "summary": summary,
         "reference_z_scores": scores, "reference_final_position": final}, indent=2) + "\n")
    print(summary_table(summary))
    print("reference's distance from our runs, in our standard deviations (epochs 2-20): "
          + ", ".join(f"{key} {value:.2f}" for key, value in scores.items()))
    print("reference's final epoch among our runs: " + ", ".join(
        f"{key} {p['reference']:.4g} (above {100 * p['fraction_of_runs_below']:.0f}% of runs, z {p['z']:+.2f})"
        for key, p in final.items()))
    try:
        plot_seed_band(summary, out_dir / "seeds.png")
        print(f"written: {out_dir / 'summary.json'}, {out_dir / 'seeds.png'}")
    except UserError as e:  # matplotlib missing: the numbers are still there
        print(f"written: {out_dir / 'summary.json'} (plot skipped: {e})")
    return 0
