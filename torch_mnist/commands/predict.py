"""scripts/predict.py: the digit in each of your own images, with the top 3 probabilities."""

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .common import Parser, check_outputs, class_names, device_flag


def parser() -> argparse.ArgumentParser:
    p = Parser("Predict the digit in your own images (PNG, JPEG, BMP, GIF).")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--checkpoint", default="ckpt.pt", help="checkpoint written by train.py (default: ckpt.pt)")
    p.add_argument("--model", metavar="MODEL.onnx",
                   help="read with a model exported by export.py instead, through onnxruntime: no torch needed "
                        "(default: the checkpoint)")
    device_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON list, an object per image (default: text)")
    p.add_argument("--show-input", metavar="OUT.png",
                   help="write the 28x28 images the model saw, enlarged side by side and captioned with each "
                        "file and its prediction; an existing PNG there is replaced, any other file refused "
                        "(default: none)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Exit 0 when every image was read, 2 when any could not be (the others are still predicted)."""
    args = parser().parse_args(argv)
    if args.show_input is not None:
        reads = {f"image {image}": Path(image) for image in args.images}
        reads["--model" if args.model else "--checkpoint"] = Path(args.model or args.checkpoint)
        check_outputs({"--show-input": (Path(args.show_input), "png")}, reads)
    from ..inference.digits import input_strip  # the heavy imports, after the flags
    from ..files import atomic_write
    from ..inference.predict import predict_files

    probabilities, names = _onnx_model(args.model) if args.model else _checkpoint_model(args)
    results = predict_files([Path(p) for p in args.images], probabilities)
    for result in results:
        if result.error:
            print(f"error: {result.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([{**result.to_dict(), **({"class_name": names[result.prediction]}
                                                  if result.error is None else {})} for result in results]))
    else:
        for result in filter(lambda r: r.error is None, results):
            top3 = ", ".join(f"{names[label]}: {probability:.3f}" for label, probability in result.top3)
            print(f"{result.path}: {names[result.prediction]}  (top 3: {top3})")
    if args.show_input:
        captions = [f"{Path(r.path).name}: " + (names[r.prediction] if r.error is None else "unreadable")
                    for r in results]
        strip = input_strip([result.pixels for result in results], captions)
        atomic_write(Path(args.show_input), lambda f: strip.save(f, format="PNG"))
    return 2 if any(result.error for result in results) else 0


def _checkpoint_model(args: argparse.Namespace) -> tuple:
    """The checkpoint's model through torch: its probabilities and class names."""
    from ..training.checkpoint import build_model, checkpoint_config, checkpoint_normalization, load_checkpoint
    from ..training.epoch import predict_probabilities
    from ..training.runtime import resolve_device

    checkpoint = load_checkpoint(Path(args.checkpoint))
    device = resolve_device(args.device)
    model, normalization = build_model(checkpoint, device), checkpoint_normalization(checkpoint)
    return (lambda pixels: predict_probabilities(model, normalization, pixels, device),
            class_names(checkpoint_config(checkpoint).dataset))


def _onnx_model(path: str) -> tuple:
    """An exported model through onnxruntime: this path never imports torch."""
    from ..inference.onnx_reader import OnnxDigitReader

    reader = OnnxDigitReader(Path(path))
    return reader.probabilities, reader.class_names
