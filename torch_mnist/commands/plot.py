"""scripts/plot.py: redraw a run's curves and confusion matrix from its JSON history and checkpoint."""

import argparse
from pathlib import Path
from typing import List, Optional

from ..engine import evaluate
from ..errors import UserError
from ..plots import write_run_plots
from ..recipe import loss_of
from ..runtime import resolve_device
from .common import check_output_path, data_flag, device_flag, load_run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Draw curves.png and confusion.png of a run from its ckpt.json.")
    p.add_argument("history", help="the run's JSON (ckpt.json); its checkpoint (ckpt.pt) must lie beside it")
    data_flag(p)
    device_flag(p)
    p.add_argument("--out-dir", help="where to write the PNGs (default: beside the JSON)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    history = Path(args.history)
    if not history.is_file():
        raise UserError(f"{history}: no such file")
    out_dir = Path(args.out_dir) if args.out_dir else history.parent
    check_output_path(out_dir / "curves.png", "--out-dir")
    device = resolve_device(args.device)
    run = load_run(history.with_suffix(".pt"), args.data_dir, device)
    metrics = evaluate(run.model, run.batches, device, loss_of(run.config), keep_predictions=True)
    print(write_run_plots(run.history, metrics["predicted"], metrics["labels"], run.class_names,
                          out_dir / "curves.png", out_dir / "confusion.png"))
    return 0
