"""scripts/export.py: a checkpoint as a verified ONNX file or torch.export program, for machines without it."""

import argparse
from pathlib import Path
from typing import List, Optional

from ..data.registry import resolve_data_root
from .common import Parser, beside, check_outputs, data_files, data_flag

FORMATS = ("onnx", "pt2")  # torch_mnist.deploy.export.FORMATS (checked by the tests)


def parser() -> argparse.ArgumentParser:
    p = Parser("Export a checkpoint to ONNX or torch.export, verified on the 10,000 test images first.")
    p.add_argument("--checkpoint", default="ckpt.pt", help="checkpoint written by train.py (default: ckpt.pt)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="onnx (onnxruntime, any language) or pt2 (torch.export.load) (default: onnx)")
    p.add_argument("--out", help="the file to write (default: the checkpoint's name with .onnx or .pt2)")
    data_flag(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(f".{args.format}")
    checkpoint = Path(args.checkpoint)
    check_outputs({"--out": (out, args.format)}, reads={"--checkpoint": checkpoint,
                                                        "its history": beside(checkpoint, ".json"),
                                                        **data_files(args.data_dir, splits=("test",))})
    from ..training.checkpoint import load_checkpoint  # the heavy imports, after the flags
    from ..deploy.export import PROBABILITY_TOLERANCE, export

    verification = export(load_checkpoint(Path(args.checkpoint)), resolve_data_root(args.data_dir), args.format, out)
    print(f"verified on {verification.images:,} test images: the same digit as the checkpoint on "
          f"{verification.argmax_agreement:,} of {verification.images:,}; probabilities within "
          f"{verification.max_probability_difference:.1e} (allowed {PROBABILITY_TOLERANCE:.0e}); "
          f"test accuracy {verification.test_accuracy:.4f}")
    print(f"written: {out}")
    return 0
