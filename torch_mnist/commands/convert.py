"""scripts/convert.py: a Keras model (.keras or .h5) as a checkpoint, or a checkpoint as a .keras file."""

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from ..data.registry import NORMALIZATIONS
from ..errors import UserError
from .common import Parser, check_outputs


def parser() -> argparse.ArgumentParser:
    p = Parser("Convert between Keras and torch_mnist: --from-keras MODEL --out ckpt.pt, or "
               "--checkpoint ckpt.pt --to-keras OUT.keras. No code in a Keras file is ever run.")
    p.add_argument("--from-keras", metavar="MODEL", help="a .keras (Keras 3) or .h5 (Keras 2, tf.keras) model "
                   "of this family: Dense relu layers, optional Dropout, a final Dense softmax of 10 (default: none; "
                   "this or --checkpoint is required)")
    p.add_argument("--out", help="the checkpoint to write with --from-keras (default: MODEL's name with .pt); "
                   "an existing checkpoint is replaced, as train.py does, with its history beside it (.json); "
                   "anything else there is refused")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="scale",
                   help="what the Keras model's inputs were: scale = pixels / 255, as the reference program; "
                        "standardize = (pixels / 255 - mean) / std (default: scale)")
    p.add_argument("--checkpoint", help="a checkpoint to write as a Keras model, with --to-keras (default: none; "
                   "this or --from-keras is required)")
    p.add_argument("--to-keras", metavar="OUT.keras", help="the Keras 3 file to write (needs Keras: "
                   "pip install -e '.[parity]'); an existing Keras file is replaced, anything else refused "
                   "(default: none; required with --checkpoint)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.from_keras) == bool(args.checkpoint):
        raise UserError("give --from-keras MODEL (to a checkpoint) or --checkpoint CKPT (to Keras), one of them "
                        "(see --help)")
    if args.from_keras:
        return _from_keras(args)
    if not args.to_keras:
        raise UserError("--checkpoint needs --to-keras OUT.keras, the file to write")
    return _to_keras(args)


def _from_keras(args: argparse.Namespace) -> int:
    if args.to_keras:
        raise UserError("--to-keras goes with --checkpoint, not with --from-keras")
    source = Path(args.from_keras)
    out = Path(args.out) if args.out else source.with_suffix(".pt")
    check_outputs({"--out": (out, "checkpoint"), "the history beside --out": (out.with_suffix(".json"), "history")},
                  reads={"--from-keras": source})
    from ..training.checkpoint import save_checkpoint  # the heavy imports, after the flags
    from ..keras.convert import checkpoint_from_keras
    from ..keras.files import read_keras_model

    conversion = checkpoint_from_keras(read_keras_model(source), args.normalize)
    save_checkpoint(conversion.checkpoint, out)
    config = conversion.checkpoint["config"]
    print(f"written: {out} (hidden {config['hidden']}, dropout {config['dropout']}, inputs {args.normalize}, "
          f"RMSprop lr {config['lr']} rho {config['rho']} eps {config['eps']}, {config['keras_semantics']})")
    resume = f"python scripts/train.py --resume {shlex.quote(str(out))} --epochs N"
    if conversion.optimizer_carried:
        steps = f" after {conversion.iterations:,} Keras steps" if conversion.iterations is not None else ""
        print(f"the RMSprop state{steps} is carried over: {resume} trains N more epochs, continuing the Keras run")
    else:
        print(f"note: the checkpoint has no optimizer state ({conversion.note}): {resume} starts a fresh "
              "RMSprop on these weights", file=sys.stderr)
    return 0


def _to_keras(args: argparse.Namespace) -> int:
    if args.out:
        raise UserError("--out goes with --from-keras; with --checkpoint, --to-keras names the file to write")
    out = Path(args.to_keras)
    if out.suffix != ".keras":
        raise UserError(f"--to-keras {out}: Keras 3 files end in .keras")
    source = Path(args.checkpoint)
    check_outputs({"--to-keras": (out, "keras")}, reads={"--checkpoint": source})
    from ..training.checkpoint import load_checkpoint  # the heavy imports, after the flags
    from ..keras.convert import write_keras

    write_keras(load_checkpoint(source), out)
    print(f"written: {out} (keras.saving.load_model reads it; it takes 784 pixels / 255, as the reference did)")
    return 0
