"""The training command (scripts/train.py) and what every script shares: flags, errors, exit codes."""

import argparse
import os
import signal
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Callable, List, Optional

from .config import AUTOCAST_DTYPES, DATASET_NAMES, KERAS_SEMANTICS, LOADERS, NORMALIZATIONS, TrainConfig
from . import distributed
from .data import resolve_data_root
from .distributed import Shard
from .engine import NonFiniteLossError
from .errors import UserError
from .idx import verify_checksums
from .progress import Progress
from .reference import comparison_table
from .runtime import resolve_device
from .training import CheckpointWriter, load_for_resume, run_training

DEFAULTS = TrainConfig()
# Flags that define the run's arithmetic: fixed by the checkpoint when resuming.
RUN_FLAGS = [f.name for f in fields(TrainConfig) if f.name != "epochs"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit status 143 instead of 130)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_main(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run a script's ``main``: a :class:`UserError` becomes one stderr line and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # outside training (which reports its own): nothing to keep
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $TORCH_MNIST_DATA, else ./data)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def train_parser() -> argparse.ArgumentParser:
    """Flags for train.py; every default comes from :class:`TrainConfig`."""
    p = argparse.ArgumentParser(description="Train the reference MLP on MNIST (defaults: the Keras reference run).")
    p.add_argument("--epochs", type=int, default=None, help=f"total epochs of the run (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=int, help=f"default: {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, help=f"RMSprop learning rate (default: {DEFAULTS.lr})")
    p.add_argument("--rho", type=float, help=f"RMSprop decay (default: {DEFAULTS.rho})")
    p.add_argument("--eps", type=float, help=f"RMSprop epsilon (default: {DEFAULTS.eps})")
    p.add_argument("--hidden", type=int, nargs="+",
                   help=f"units of each hidden layer, e.g. 512 512 (default: {' '.join(map(str, DEFAULTS.hidden))})")
    p.add_argument("--dropout", type=float, help=f"dropout after each hidden layer (default: {DEFAULTS.dropout})")
    p.add_argument("--seed", type=int, help=f"seeds weights and shuffling (default: {DEFAULTS.seed})")
    p.add_argument("--dataset", choices=DATASET_NAMES, help=f"default: {DEFAULTS.dataset}")
    p.add_argument("--normalize", choices=NORMALIZATIONS,
                   help=f"scale: x / 255; standardize: the dataset's mean and std (default: {DEFAULTS.normalize})")
    p.add_argument("--loader", choices=LOADERS,
                   help=f"memory: decoded tensors on the device; dataloader: per-image transform "
                        f"(default: {DEFAULTS.loader})")
    p.add_argument("--keras-semantics", choices=tuple(KERAS_SEMANTICS),
                   help=f"RMSprop epsilon placement and loss clipping of that Keras generation "
                        f"(default: {DEFAULTS.keras_semantics})")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model and the optimizer's update (first epoch includes compiling)")
    p.add_argument("--amp", choices=tuple(AUTOCAST_DTYPES),
                   help=f"bf16: training forward passes under bfloat16 autocast (default: {DEFAULTS.amp})")
    data_flags(p)
    p.add_argument("--out", help="checkpoint path (default: ckpt.pt, or the --resume path)")
    p.add_argument("--save-every", type=int, default=1, help="write the checkpoint every N epochs (default: 1)")
    p.add_argument("--resume", help="continue the run saved in this checkpoint")
    p.add_argument("--verify-data", action="store_true", help="check the MNIST files' official MD5 sums first")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-plots", action="store_true", help="skip curves.png and confusion.png")
    return p


def check_output_path(path: Path, flag: str = "--out") -> None:
    """Reject an output path that could not be written, before any work starts."""
    folder = path.parent
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file path such as {path / 'ckpt.pt'}")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: folder {folder} is not writable ({e.strerror})") from None


def _train_config(args: argparse.Namespace) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in RUN_FLAGS if getattr(args, name) is not None}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return TrainConfig(**{**DEFAULTS.to_dict(), **overrides}).validate()


def train_main(argv: Optional[List[str]] = None) -> int:
    args = train_parser().parse_args(argv)
    if args.save_every <= 0:
        raise UserError(f"--save-every must be a positive integer, got {args.save_every}")
    out = Path(args.out or args.resume or "ckpt.pt")
    check_output_path(out)
    shard, device = Shard(), None
    if distributed.launched_by_torchrun():
        shard, device = distributed.init(args.device)
    try:
        return _train(args, out, shard, device or resolve_device(args.device))
    finally:
        distributed.shutdown(shard)


def _train(args: argparse.Namespace, out: Path, shard: Shard, device) -> int:
    resume = None
    if args.resume:
        given = [f"--{name.replace('_', '-')}" for name in RUN_FLAGS if getattr(args, name) is not None]
        if given:
            raise UserError(f"{', '.join(given)} cannot be changed when resuming; the checkpoint fixes them")
        resume, config = load_for_resume(Path(args.resume), args.epochs or DEFAULTS.epochs)
    else:
        config = _train_config(args)
    data_root = resolve_data_root(args.data_dir)
    if args.verify_data:
        if config.dataset != "mnist":
            raise UserError("--verify-data knows the official checksums of MNIST only")
        verify_checksums(data_root / "MNIST" / "raw")

    writer = CheckpointWriter(out, args.save_every, config.epochs, enabled=shard.is_main)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        result = run_training(config, data_root, device, out, save_every=args.save_every, resume=resume,
                              progress=Progress("quiet" if args.quiet or not shard.is_main else "auto"),
                              writer=writer, shard=shard)
    except KeyboardInterrupt as e:
        if shard.is_main:
            print(f"interrupted: {_saved_note(writer, out, resume, config)}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except NonFiniteLossError as e:
        raise UserError(f"{e}; {_saved_note(writer, out, resume, config)}") from None
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)

    if not shard.is_main:  # rank 0 reports for all
        return 0
    history = result.history
    if config.dataset == "mnist":  # the reference's figures are MNIST's
        print(comparison_table(history))
    print(f"checkpoint: {out} (history: {out.with_suffix('.json')})")
    if not args.no_plots:
        print(_plot_run(result, config, device, out.parent))
    print(f"loss: {history['val_loss'][-1]}")
    print(f"acc: {history['val_accuracy'][-1]}")
    return 0


def _plot_run(result, config: TrainConfig, device, out_dir: Path) -> str:
    """Plots from the run still in memory: no checkpoint or test set to read again."""
    from .cli_results import class_names, write_run_plots  # matplotlib, if present, loads only here
    from .plots import PlotsUnavailable

    try:
        return write_run_plots(result.history, result.model, result.test_batches, device, class_names(config),
                               out_dir)
    except PlotsUnavailable as e:
        return f"plots skipped: {e}"


def _saved_note(writer: CheckpointWriter, out: Path, resume: Optional[dict], config: TrainConfig) -> str:
    """Where the last complete epoch is, and the command that continues from it."""
    epoch = writer.saved_epoch if writer.saved_epoch is not None else (resume or {}).get("epoch")
    if epoch is None:
        return "no epoch completed, so no checkpoint was written"
    return (f"epoch {epoch} is saved in {out}; continue with: "
            f"python scripts/train.py --resume {out} --epochs {config.epochs}")


def script(main: Callable[[Optional[List[str]]], int]) -> None:
    """The body of ``if __name__ == "__main__"`` for scripts: run and exit with the status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run_main(main))
