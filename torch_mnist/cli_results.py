"""Commands that look at a trained model: evaluate.py, predict.py, plot.py."""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from .analysis import confusion_matrix, format_confusion, misclassified_grid, per_class_accuracy, predict_batches
from .checkpoint import atomic_write, build_model, checkpoint_normalization, load_checkpoint
from .cli import check_output_path, data_flags
from .config import KERAS_SEMANTICS, TrainConfig
from .data import InMemoryBatches, dataset_info, decode, load_mnist, resolve_data_root
from .engine import evaluate, make_loss_fn
from .errors import UserError
from .predict import predict_files
from .runtime import resolve_device


def _test_batches(checkpoint: dict, data_root: Path, device):
    """The test set as the training run validated on it: its dataset, normalization and batch size."""
    config = TrainConfig.from_dict(checkpoint["config"])
    test = load_mnist(data_root, train=False, dataset=config.dataset)
    split = decode(test, checkpoint_normalization(checkpoint), device)
    # The run's own batch size, so the sums run in the same order as its validation did.
    return test, InMemoryBatches(split, config.batch_size)


def _class_names(checkpoint: dict) -> list:
    return list(dataset_info(TrainConfig.from_dict(checkpoint["config"]).dataset).class_names)


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
        check_output_path(Path(args.misclassified))
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(Path(args.checkpoint))
    model = build_model(checkpoint, device)
    test, batches = _test_batches(checkpoint, resolve_data_root(args.data_dir), device)
    config = TrainConfig.from_dict(checkpoint["config"])
    metrics = evaluate(model, batches, device, make_loss_fn(KERAS_SEMANTICS[config.keras_semantics]
                                                            ["clip_probabilities"]))
    predicted, true = predict_batches(model, batches)
    matrix = confusion_matrix(predicted, true)
    if args.misclassified:
        count = misclassified_grid(test.data.numpy(), true, predicted, Path(args.misclassified))
        print(f"misclassified: {count} shown in {args.misclassified}", file=sys.stderr)
    if args.json:
        print(json.dumps({"loss": metrics["loss"], "accuracy": metrics["accuracy"],
                          "per_class_accuracy": dict(zip(_class_names(checkpoint), per_class_accuracy(matrix))),
                          "confusion_matrix": matrix.tolist()}))
        return 0
    print(f"loss: {metrics['loss']}")
    print(f"acc: {metrics['accuracy']}")
    print(format_confusion(matrix, _class_names(checkpoint)))
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
        check_output_path(Path(args.show_input))
    checkpoint = load_checkpoint(Path(args.checkpoint))
    device = resolve_device(args.device)
    results = predict_files(build_model(checkpoint, device), [Path(p) for p in args.images],
                            checkpoint_normalization(checkpoint), device)
    for result in results:
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
    names = _class_names(checkpoint)
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


def write_run_plots(checkpoint_path: Path, data_root: Path, device, out_dir: Optional[Path] = None) -> str:
    """curves.png and confusion.png for a saved run; returns a line saying what was written."""
    from . import plots

    out_dir = Path(out_dir or Path(checkpoint_path).parent)
    checkpoint = load_checkpoint(checkpoint_path)
    try:
        plots.plot_curves(checkpoint["history"], out_dir / "curves.png")
        model = build_model(checkpoint, device)
        _, batches = _test_batches(checkpoint, data_root, device)
        plots.plot_confusion(confusion_matrix(*predict_batches(model, batches)), _class_names(checkpoint),
                             out_dir / "confusion.png")
    except UserError as e:
        if str(e) == plots.INSTALL_HINT:
            return f"plots skipped: {e}"
        raise
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
    if args.out_dir:
        check_output_path(Path(args.out_dir) / "curves.png")
    line = write_run_plots(history.with_suffix(".pt"), resolve_data_root(args.data_dir),
                           resolve_device(args.device), Path(args.out_dir) if args.out_dir else None)
    if line.startswith("plots skipped"):
        raise UserError(line)
    print(line)
    return 0
