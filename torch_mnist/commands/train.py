"""scripts/train.py: train the reference MLP (defaults: the Keras reference run), resume, or join torchrun."""

import argparse
import os
import shlex
import signal
import sys
import warnings
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from ..config import AMP_MODES, DATASET_NAMES, DISTORTIONS, KERAS_SEMANTICS, LOADERS, LR_SCHEDULES, TrainConfig
from ..data.registry import NORMALIZATIONS, resolve_data_root
from ..errors import Note, UserError
from .common import (Parser, Terminated, check_output_path, check_outputs, class_names,
                     data_files, data_flag, device_flag, file_identity, raise_terminated)

DEFAULTS = TrainConfig()
# Flags that define the run's arithmetic: fixed by the checkpoint when resuming.
RUN_FLAGS = [f.name for f in fields(TrainConfig) if f.name != "epochs"]


def parser() -> argparse.ArgumentParser:
    """Flags for train.py; every default comes from :class:`TrainConfig`."""
    p = Parser("Train the reference MLP on MNIST (defaults: the Keras reference run).")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"total epochs of the run (default: {DEFAULTS.epochs}; when resuming, the checkpoint's)")
    p.add_argument("--batch-size", type=int, help=f"default: {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, help=f"RMSprop learning rate (default: {DEFAULTS.lr})")
    p.add_argument("--rho", type=float, help=f"RMSprop decay (default: {DEFAULTS.rho})")
    p.add_argument("--eps", type=float, help=f"RMSprop epsilon (default: {DEFAULTS.eps})")
    p.add_argument("--hidden", type=int, nargs="+",
                   help=f"units of each hidden layer, e.g. 512 512 (default: {' '.join(map(str, DEFAULTS.hidden))})")
    p.add_argument("--dropout", type=float, nargs="+", metavar="RATE",
                   help=f"dropout after each hidden layer, or one rate per hidden layer, e.g. 0 0.3 "
                        f"(default: {DEFAULTS.dropout})")
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
    p.add_argument("--distort", nargs="*", choices=DISTORTIONS, metavar="KIND",
                   help=f"redraw every training digit each epoch through these distortions, any of "
                        f"{', '.join(DISTORTIONS)} (docs/robust.md; give none to turn them off; default: "
                        f"{' '.join(DEFAULTS.distort) or 'none'})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help=f"constant, or cosine: the learning rate decays to ~0 over the run's epochs "
                        f"(default: {DEFAULTS.lr_schedule})")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="each training step as one torch.compile graph: forward, backward and RMSprop update "
                        "(the first epoch includes compiling; without a working compiler it trains eagerly, "
                        "with a note); --no-compile: eager steps. Under torchrun steps are eager through DDP "
                        "(default: on)")
    p.add_argument("--amp", choices=AMP_MODES,
                   help=f"bf16: training forward passes under bfloat16 autocast (default: {DEFAULTS.amp})")
    data_flag(p)
    device_flag(p)
    p.add_argument("--out", help="checkpoint path; its history goes beside it (.json), and the plots "
                                 "(.curves.png, .confusion.png); existing files of those kinds are replaced, any "
                                 "other file there is refused (default: ckpt.pt, or the --resume path)")
    p.add_argument("--save-every", type=int, default=1, help="write the checkpoint every N epochs (default: 1)")
    p.add_argument("--resume", help="continue the run saved in this checkpoint (default: a new run)")
    p.add_argument("--verify-data", action="store_true",
                   help="check the MNIST files' official MD5 sums first (default: off)")
    p.add_argument("--quiet", action="store_true", help="no progress output (default: a bar in a terminal, "
                                                          "a line per epoch in a log)")
    p.add_argument("--no-plots", action="store_true", help="skip the curves and confusion plots (default: drawn)")
    p.add_argument("--log-csv", metavar="PATH",
                   help="one row per epoch, as Keras' CSVLogger writes it; resumed runs append (default: none)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="TensorBoard event files: figures per epoch, training loss per steps, config, graph "
                        "(default: none)")
    p.add_argument("--tensorboard-every", type=int, default=10, metavar="N",
                   help="log the training loss every N steps (default: 10)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.save_every <= 0:
        raise UserError(f"--save-every must be a positive integer, got {args.save_every}")
    if args.tensorboard_every <= 0:
        raise UserError(f"--tensorboard-every must be a positive integer, got {args.tensorboard_every}")
    config = None
    if args.resume:
        given = [f"--{name.replace('_', '-')}" for name in RUN_FLAGS if getattr(args, name) is not None]
        if given:
            raise UserError(f"{', '.join(given)} cannot be changed when resuming; the checkpoint fixes them")
    else:
        config = _config(args)  # every flag checked before torch is even imported
    out = Path(args.out or args.resume or "ckpt.pt")
    if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 writes: other nodes need no such folder
        check_output_path(out)
    from .. import distributed  # the heavy imports start here, after every flag is known to be sound
    from ..distributed import Shard
    from ..training.runtime import resolve_device

    shard, device = Shard(), None
    if distributed.launched_by_torchrun():
        shard, device = distributed.init(args.device)
    try:
        return _train(args, config, out, shard, device or resolve_device(args.device))
    except distributed.PeerFailed:
        return 2  # the rank that failed prints the one line
    finally:
        distributed.shutdown(shard)


def _config(args: argparse.Namespace) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in RUN_FLAGS if getattr(args, name) is not None}
    if args.dropout is not None:
        overrides["dropout"] = args.dropout[0] if len(args.dropout) == 1 else tuple(args.dropout)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return TrainConfig(**{**DEFAULTS.to_dict(), **overrides}).validate()


def _train(args: argparse.Namespace, config: Optional[TrainConfig], out: Path, shard, device) -> int:
    from ..training.epoch import NonFiniteLossError
    from ..data.idx import verify_checksums
    from ..data.mnist import raw_folder
    from ..training.progress import Progress
    from ..training.run import CheckpointWriter, load_for_resume, run_training

    resume = None
    if args.resume:
        resume, config = load_for_resume(Path(args.resume), args.epochs)
    if shard.is_main:
        _check_outputs(args, out, config)
    data_root = resolve_data_root(args.data_dir)
    if args.verify_data:
        if config.dataset != "mnist":
            raise UserError("--verify-data knows the official checksums of MNIST only")
        verify_checksums(raw_folder(data_root, config.dataset))

    if not shard.is_main:
        warnings.filterwarnings("ignore", category=Note)  # rank 0 says what every rank would
    logs = _logs(args, resuming=resume is not None) if shard.is_main else []  # under torchrun rank 0 logs
    writer = CheckpointWriter(out, args.save_every, config.epochs, enabled=shard.is_main)
    previous_sigterm = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        result = run_training(config, data_root, device, out, save_every=args.save_every, resume=resume,
                              progress=Progress("quiet" if args.quiet or not shard.is_main else "auto"),
                              writer=writer, shard=shard, logs=logs)
    except KeyboardInterrupt as e:
        if shard.is_main:
            print(f"interrupted: {_saved_note(writer, out, resume, config, args)}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except NonFiniteLossError as e:
        if not shard.is_main:
            return 2  # every rank stops at the same epoch end; rank 0 says so once
        raise UserError(f"{e}; {_saved_note(writer, out, resume, config, args)}") from None
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)

    if shard.is_main:  # rank 0 reports for all
        _report(result, config, out, plots=not args.no_plots)
    return 0


def _check_outputs(args: argparse.Namespace, out: Path, config: TrainConfig) -> None:
    """Every file the run will write, checked against what it reads and against each other before any work:
    none may be another's, and an existing one is replaced only by its own kind."""
    from ..training.checkpoint import history_path
    from ..reports.plots import plots_paths

    writes = {"--out": (out, "checkpoint"), "the history beside --out": (history_path(out), "history")}
    if args.log_csv:
        writes["--log-csv"] = (Path(args.log_csv), "csv")
    if not args.no_plots:
        curves, confusion = plots_paths(out)
        writes.update({"the curves beside --out": (curves, "png"), "the confusion matrix beside --out": (confusion,
                                                                                                        "png")})
    reads = data_files(args.data_dir, config.dataset)
    if args.resume and file_identity(Path(args.resume)) != file_identity(out):  # --resume X writes X: the default
        reads["--resume"] = Path(args.resume)
    check_outputs(writes, reads)


def _logs(args: argparse.Namespace, resuming: bool) -> list:
    """The --log-csv and --tensorboard logs, each checked (writable, this run's) before any work."""
    from ..training.logs import CsvLog, TensorBoardLog

    logs = []
    if args.log_csv:
        logs.append(CsvLog(Path(args.log_csv), resuming))
    if args.tensorboard:
        logs.append(TensorBoardLog(Path(args.tensorboard), args.tensorboard_every))
    for log in logs:
        log.check()
    return logs


def _report(result, config: TrainConfig, out: Path, plots: bool) -> None:
    from ..reports.plots import PlotsUnavailable, plots_paths, write_run_plots
    from ..reports.reference import comparison_table

    history = result.history
    if config.dataset == "mnist":  # the reference's figures are MNIST's
        print(comparison_table(history))
    print(f"checkpoint: {out} (history: {out.with_suffix('.json')})")
    if plots:
        try:  # from the run still in memory: no checkpoint or test set to read again
            print(write_run_plots(history, result.predicted, result.labels, class_names(config.dataset),
                                  *plots_paths(out), with_reference=config.dataset == "mnist"))
        except PlotsUnavailable as e:
            print(f"plots skipped: {e}")
    print(f"loss: {history['val_loss'][-1]}")
    print(f"acc: {history['val_accuracy'][-1]}")


def _saved_note(writer, out: Path, resume: Optional[dict], config: TrainConfig, args: argparse.Namespace) -> str:
    """Where the last complete epoch is, and the command that continues from it (on the same data and device)."""
    epoch = writer.saved_epoch if writer.saved_epoch is not None else (resume or {}).get("epoch")
    if epoch is None:
        return "no epoch completed, so no checkpoint was written"
    same = (("data-dir", args.data_dir), ("device", args.device), ("log-csv", args.log_csv),
            ("tensorboard", args.tensorboard))  # the logs continue where they stopped, too
    where = "".join(f" --{flag} {shlex.quote(str(value))}" for flag, value in same
                    if value is not None and not (flag == "device" and value == "auto"))
    return (f"epoch {epoch} is saved in {out}; continue with: "
            f"python scripts/train.py --resume {shlex.quote(str(out))} --epochs {config.epochs}{where}")
