"""Commands that look at a trained model: evaluate.py, predict.py, plot.py."""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image

from .analysis import confusion_matrix, format_confusion, misclassified_grid, per_class_accuracy
from .checkpoint import atomic_write, build_model, checkpoint_normalization, load_checkpoint
from .cli import check_output_path, data_flags
from .config import TrainConfig
from .data import InMemoryBatches, dataset_info, decode, load_mnist, resolve_data_root
from .engine import evaluate, loss_for
from .errors import UserError
from .plots import plot_confusion, plot_curves
from .predict import predict_files
from .runtime import resolve_device


@dataclass
class SavedRun:
    """A checkpoint brought back with the test set it was validated on."""

    config: TrainConfig
    history: dict
    model: torch.nn.Module
    test: object  # the torchvision test split (its raw pixels draw the mistakes grid)
    batches: InMemoryBatches

    @property
    def class_names(self) -> List[str]:
        return class_names(self.config)


def class_names(config: TrainConfig) -> List[str]:
    return list(dataset_info(config.dataset).class_names)


def load_run(checkpoint_path: Path, data_root: Path, device: torch.device) -> SavedRun:
    """The checkpoint's model and its dataset's test split, normalized as in training."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = TrainConfig.from_dict(checkpoint["config"])
    test = load_mnist(data_root, train=False, dataset=config.dataset)
    split = decode(test, checkpoint_normalization(checkpoint), device)
    # The run's own batch size, so the sums run in the same order as its validation did.
    return SavedRun(config, checkpoint["history"], build_model(checkpoint, device), test,
                    InMemoryBatches(split, config.batch_size))


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a checkpoint on the 10,000 MNIST test images.")
    p.add_argument("--checkpoint", default="ckpt.pt", help="checkpoint written by train.py (default: ckpt.pt)")
    data_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--misclassified", metavar="GRID.png", help="write a grid of the wrongly classified images")
    return p


def evaluate_main(argv: Optional[List[str]] = None) -> int:
    args = evaluate_parser().parse_args(argv)
    if args.misclassified:
        check_output_path(Path(args.misclassified), "--misclassified")
    device = resolve_device(args.device)
    run = load_run(Path(args.checkpoint), resolve_data_root(args.data_dir), device)
    metrics = evaluate(run.model, run.batches, device, loss_for(run.config.keras_semantics), keep_predictions=True)
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


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict the digit in your own images (PNG, JPEG, BMP, GIF).")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", default="ckpt.pt", help="default: ckpt.pt")
    p.add_argument("--device", default="cpu", help="default: cpu")
    p.add_argument("--json", action="store_true", help="print one JSON list, an object per image")
    p.add_argument("--show-input", metavar="OUT.png", help="write the 28x28 images the model saw, side by side")
    return p


def predict_main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 when every image was read, 2 when any could not be (the others are still predicted)."""
    args = predict_parser().parse_args(argv)
    if args.show_input:
        check_output_path(Path(args.show_input), "--show-input")
    checkpoint = load_checkpoint(Path(args.checkpoint))
    device = resolve_device(args.device)
    results = predict_files(build_model(checkpoint, device), [Path(p) for p in args.images],
                            checkpoint_normalization(checkpoint), device)
    for result in results:
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
    names = class_names(TrainConfig.from_dict(checkpoint["config"]))
    if args.json:
        print(json.dumps([{**result.to_dict(), **({"class_name": names[result.prediction]}
                                                  if result.error is None else {})} for result in results]))
    else:
        for result in filter(lambda r: r.error is None, results):
            top3 = ", ".join(f"{names[label]}: {probability:.3f}" for label, probability in result.top3)
            print(f"{result.path}: {names[result.prediction]}  (top 3: {top3})")
    seen = [result.pixels for result in results if result.pixels is not None]
    if args.show_input and seen:
        strip = Image.fromarray(np.concatenate(seen, axis=1))
        atomic_write(Path(args.show_input), lambda f: strip.save(f, format="PNG"))
    return 2 if any(result.error for result in results) else 0


def write_run_plots(history: dict, model: torch.nn.Module, batches, device: torch.device,
                    names: List[str], out_dir: Path) -> str:
    """curves.png and confusion.png of a run; returns the line that says where.

    Raises :class:`PlotsUnavailable` without matplotlib.
    """
    plot_curves(history, out_dir / "curves.png")
    metrics = evaluate(model, batches, device, keep_predictions=True)
    plot_confusion(confusion_matrix(metrics["predicted"], metrics["labels"]), names, out_dir / "confusion.png")
    return f"plots: {out_dir / 'curves.png'}, {out_dir / 'confusion.png'}"


def plot_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Draw curves.png and confusion.png of a run from its ckpt.json.")
    p.add_argument("history", help="the run's JSON (ckpt.json); its checkpoint (ckpt.pt) must lie beside it")
    data_flags(p)
    p.add_argument("--out-dir", help="where to write the PNGs (default: beside the JSON)")
    args = p.parse_args(argv)
    history = Path(args.history)
    if not history.is_file():
        raise UserError(f"{history}: no such file")
    out_dir = Path(args.out_dir) if args.out_dir else history.parent
    check_output_path(out_dir / "curves.png", "--out-dir")
    device = resolve_device(args.device)
    run = load_run(history.with_suffix(".pt"), resolve_data_root(args.data_dir), device)
    print(write_run_plots(run.history, run.model, run.batches, device, run.class_names, out_dir))
    return 0
