"""scripts/evaluate.py: a checkpoint's loss and accuracy on the test set, per class and as a confusion matrix."""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .common import Parser, beside, check_outputs, data_files, data_flag, device_flag


def parser() -> argparse.ArgumentParser:
    p = Parser("Evaluate a checkpoint on the 10,000 MNIST test images.")
    p.add_argument("--checkpoint", default="ckpt.pt", help="checkpoint written by train.py (default: ckpt.pt)")
    data_flag(p)
    device_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text (default: text)")
    p.add_argument("--misclassified", metavar="GRID.png",
                   help="write a grid of the wrongly classified images; an existing PNG there is replaced, "
                        "any other file refused (default: none)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.misclassified is not None:
        checkpoint = Path(args.checkpoint)
        check_outputs({"--misclassified": (Path(args.misclassified), "png")},
                      reads={"--checkpoint": checkpoint, "its history": beside(checkpoint, ".json"),
                             **data_files(args.data_dir, splits=("test",))})
    from ..reports.analysis import confusion_matrix, format_confusion, misclassified_grid, per_class_accuracy
    from ..training.epoch import evaluate  # the heavy imports, after the flags
    from ..training.onednn import linear_layers_through_onednn
    from ..recipe import loss_of
    from ..training.runtime import resolve_device
    from .runs import load_run

    device = resolve_device(args.device)
    run = load_run(Path(args.checkpoint), args.data_dir, device)
    with linear_layers_through_onednn():  # the products as training's (AMD CPUs with AVX-512)
        metrics = evaluate(run.model, run.batches, device, loss_fn=loss_of(run.config), keep_predictions=True)
    matrix = confusion_matrix(metrics["predicted"], metrics["labels"])
    if args.misclassified:
        count = misclassified_grid(run.test.data.numpy(), metrics["labels"], metrics["predicted"],
                                   Path(args.misclassified))
        print(f"misclassified: {count} shown in {args.misclassified}", file=sys.stderr)
    if args.json:
        print(json.dumps({"loss": metrics["loss"], "accuracy": metrics["accuracy"],
                          "per_class_accuracy": dict(zip(run.class_names, per_class_accuracy(matrix))),
                          "confusion_matrix": matrix.tolist()}))
        return 0
    print(f"loss: {metrics['loss']}")
    print(f"acc: {metrics['accuracy']}")
    print(format_confusion(matrix, run.class_names))
    return 0
