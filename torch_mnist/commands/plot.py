"""scripts/plot.py: redraw a run's curves from its JSON history, and its confusion matrix where it can."""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import List, Optional

from ..errors import UserError
from ..history import HISTORY_KEYS
from .common import (Parser, check_outputs, class_names, data_flag,
                     device_flag)


def parser() -> argparse.ArgumentParser:
    p = Parser("Draw a run's learning curves from its JSON history (ckpt.json), and its confusion matrix "
               "when the checkpoint beside it and the test set are at hand.")
    p.add_argument("history", help="the run's JSON history, written beside its checkpoint (ckpt.json)")
    data_flag(p)
    device_flag(p)
    p.add_argument("--out-dir", help="where to write the pictures, created if missing (default: beside the JSON)")
    return p


def read_history(path: Path) -> dict:
    """The JSON train.py writes beside a checkpoint: ``{"epoch", "config", "history"}``."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        run = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: not a JSON history; pass the .json that train.py writes beside its "
                        "checkpoint") from None
    history = run.get("history") if isinstance(run, dict) else None
    if not isinstance(history, dict) or any(not isinstance(history.get(key), list) for key in HISTORY_KEYS):
        raise UserError(f"{path}: JSON without a run's history (loss, accuracy, val_loss, val_accuracy per epoch)")
    lengths = {key: len(history[key]) for key in HISTORY_KEYS}
    if len(set(lengths.values())) != 1 or not lengths["loss"]:
        raise UserError(f"{path}: the history's lists should hold one figure per epoch each, found {lengths}")
    if not all(type(v) in (int, float) and math.isfinite(v) for key in HISTORY_KEYS for v in history[key]):
        raise UserError(f"{path}: the history holds something other than finite numbers")
    return run


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    json_path = Path(args.history)
    run = read_history(json_path)
    out_dir = Path(args.out_dir) if args.out_dir else json_path.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out-dir {out_dir}: cannot be created ({e.strerror})") from None
    from ..reports.plots import plot_confusion, plot_curves, plots_paths  # the heavy imports, after the flags

    curves, confusion = plots_paths(json_path, out_dir)
    where = f"--out-dir {out_dir}:" if args.out_dir else f"beside {json_path}:"
    check_outputs({f"the curves {where}": (curves, "png"), f"the confusion matrix {where}": (confusion, "png")},
                  reads={"the history": json_path, "its checkpoint": json_path.with_suffix(".pt")})
    dataset = (run.get("config") or {}).get("dataset", "mnist")
    plot_curves(run["history"], curves, with_reference=dataset == "mnist")
    print(f"curves: {curves}")
    try:  # the confusion matrix needs the model and the test set; the curves did not
        matrix = _confusion(json_path.with_suffix(".pt"), args)
    except UserError as e:
        print(f"note: no confusion matrix: {e}", file=sys.stderr)
        return 0
    plot_confusion(matrix, class_names(dataset), confusion)
    print(f"confusion matrix: {confusion}")
    return 0


def _confusion(checkpoint: Path, args: argparse.Namespace):
    from ..reports.analysis import confusion_matrix
    from ..training.epoch import evaluate
    from ..training.onednn import linear_layers_through_onednn
    from ..training.runtime import resolve_device
    from .runs import load_run

    device = resolve_device(args.device)
    run = load_run(checkpoint, args.data_dir, device)
    with linear_layers_through_onednn():  # the products as training's (AMD CPUs with AVX-512)
        metrics = evaluate(run.model, run.batches, device, keep_predictions=True)
    return confusion_matrix(metrics["predicted"], metrics["labels"])
