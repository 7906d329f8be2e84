"""What every command shares: running a ``main``, the parser and its common flags, output checks.

Torch-free on purpose: a command parses its flags with only this loaded and
imports the heavy modules afterwards, so ``--help`` and a bad flag answer at once.
"""

import argparse
import atexit
import errno
import os
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..data.registry import dataset_info
from ..errors import Note, UserError

Main = Callable[[Optional[List[str]]], int]


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit status 143 instead of 130)."""


_signals_received: List[int] = []  # SIGTERMs handled in this process so far


def raise_terminated(signum, frame):
    _signals_received.append(signum)
    raise Terminated()


def _interruption_behind(error: BaseException) -> Optional[KeyboardInterrupt]:
    """The interruption an unexpected error came from, if any: a signal landing inside a C extension's import
    or call can surface as that library's own error (protobuf's TypeError during ``import onnx``, say), with
    the interruption as its context, or lost entirely after our SIGTERM handler saw it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return Terminated() if _signals_received else None


def run_main(main: Main, argv: Optional[List[str]] = None) -> int:
    """Run a command's ``main``: a :class:`UserError` becomes one stderr line and exit code 2,
    a :class:`Note` one ``note:`` line."""
    _signals_received.clear()  # a signal handled before this run is not this run's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", Note)
            default_show = warnings.showwarning

            def show(message, category, *args, **kwargs):
                if issubclass(category, Note):
                    print(f"note: {one_line_text(str(message))}", file=sys.stderr)
                else:
                    default_show(message, category, *args, **kwargs)

            warnings.showwarning = show
            _usable_torch_cache()
            return main(argv)
    except UserError as e:
        print(f"error: {one_line_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # outside training (which reports its own): nothing to keep
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; stop quietly, as Unix tools do
        _stdout_to_nowhere()
        return 128 + signal.SIGPIPE
    except OSError as e:
        if e.errno not in OUTPUT_ERRORS:
            raise
        # Our own files report their failures as UserErrors naming them: what is left is standard output
        # (a full disk, /dev/full).
        _stdout_to_nowhere()
        print(f"error: the output could not be written ({e.strerror})", file=sys.stderr)
        return 2
    except Exception as e:
        interruption = _interruption_behind(e)
        if interruption is None:
            raise  # a bug of ours: its traceback is what a report needs
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(interruption, Terminated) else 130


OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _stdout_to_nowhere() -> None:
    """Standard output to /dev/null, so that the interpreter's last flush at exit fails no more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _usable_torch_cache() -> None:
    """A ``TORCHINDUCTOR_CACHE_DIR`` that cannot be used (a file, a read-only folder) stops torch's import or
    costs every compile its failure: the run uses a private temporary cache instead, and says so."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not folder:
        return
    path = Path(folder)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    problem = ("is not a folder" if existing == path and not path.is_dir() else
               "is in a file's place" if not existing.is_dir() else
               "" if os.access(existing, os.W_OK | os.X_OK) else "is not writable")
    if problem:
        private = tempfile.mkdtemp(prefix="torch_mnist_inductor_")
        atexit.register(shutil.rmtree, private, True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = private
        warnings.warn(f"TORCHINDUCTOR_CACHE_DIR {one_line_text(folder)} {problem}: torch.compile caches in a "
                      "temporary folder for this run (compiling from scratch)", Note, stacklevel=2)


def one_line_text(text: str) -> str:
    """``text`` on one line whatever it quotes (a file name or a flag value may hold a line break)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def script(main: Main) -> None:
    """The body of ``if __name__ == "__main__"`` for scripts: run and exit with the status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # as Ctrl-C, from start-up to exit: one line, 143
        signal.signal(signal.SIGTERM, raise_terminated)
    code = run_main(main)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker whose work is done, files closed and process group destroyed leaves
        # without the interpreter's and the C++ libraries' teardown: there a torch thread was seen
        # to abort ("terminate called without an active exception", no Python frame on the stack)
        # in about 1 of 25 two-rank runs, and torchrun then reports a finished run as failed. The
        # known cause upstream: Gloo's worker threads can still hold tensors with Python references
        # while the interpreter finalizes, and releasing them there aborts (pytorch/pytorch#179291,
        # abandoned; the terminate message without a cleanup is pytorch/pytorch#190489). Only
        # workers (WORLD_SIZE > 1) take this exit, after flushing what they printed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse with our error format: a bad flag is one ``error:`` line and exit code 2, like every other
    mistake, instead of argparse's usage block. ``--help`` shows every default."""

    def __init__(self, description: str):
        super().__init__(description=description)

    def error(self, message: str):
        raise UserError(f"{message} (see --help)")


def class_names(dataset: str) -> List[str]:
    return list(dataset_info(dataset).class_names)


def data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding MNIST/raw (default: $TORCH_MNIST_DATA, else ./data)")


def device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def check_output_path(path: Path, flag: str = "--out", example: str = "ckpt.pt") -> None:
    """Reject an output path that could not be written, before any work starts (``example``: a file name
    of the kind the flag wants, for the message about a folder)."""
    folder = path.parent
    if str(path) in ("", "."):
        raise UserError(f"{flag} needs a file path such as {example}")
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a file path such as {path / example}")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: folder {folder} is not writable ({e.strerror})") from None


def check_distinct_paths(reads: Dict[str, Path], writes: Dict[str, Path]) -> None:
    """Refuse, before any work, an output that is one of the command's inputs or another of its outputs:
    the same file after resolving links (symbolic or hard). ``reads``/``writes``: a role (a flag) -> path."""
    seen: Dict[object, str] = {}
    for kind, paths in (("reads", reads), ("writes", writes)):
        for role, path in paths.items():
            if path is None:
                continue
            identity = file_identity(Path(path))
            if identity in seen and (kind == "writes"):
                raise UserError(f"{role} {path} is the same file as {seen[identity]}: it would be overwritten; "
                                "choose another path")
            seen.setdefault(identity, f"{role} {path}" if kind == "writes" else f"the input {role} {path}")


def file_identity(path: Path):
    """What makes two paths one file: device and inode where it exists, else its fully resolved path."""
    try:
        info = os.stat(path)
        return ("inode", info.st_dev, info.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


REPLACEABLE = {  # what an existing output must already be for a command to replace it, and how to tell
    "checkpoint": ("a checkpoint", lambda head: head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")),
    "history": ("a run's JSON history", lambda head: head.lstrip().startswith(b"{") and b'"history"' in head),
    "png": ("a PNG image", lambda head: head.startswith(b"\x89PNG\r\n\x1a\n")),
    "keras": ("a Keras model", lambda head: head.startswith(b"PK\x03\x04") and b"config.json" in head),
    # an ONNX model is a protobuf whose first field is its IR version (field 1, a varint: byte 0x08)
    "onnx": ("an ONNX model", lambda head: head.startswith(b"\x08") and b"onnx" in head.lower()),
    "pt2": ("a torch.export file", lambda head: head.startswith(b"PK\x03\x04")),
    "benchmark": ("a benchmark's JSON", lambda head: head.lstrip().startswith(b"{") and b'"floor"' in head),
    "csv": ("a CSV log", lambda head: True),  # --log-csv: the log reads its own file's columns (training/logs.py)
}


def check_outputs(writes: Dict[str, tuple], reads: Optional[Dict[str, Path]] = None) -> None:
    """Every check an output needs, before any work: ``writes`` maps a role (a flag) to ``(path, kind)``,
    ``kind`` a key of :data:`REPLACEABLE` (what an existing file there must be for it to be replaced);
    ``reads`` the command's inputs, which no output may be. A ``csv`` log checks its own folder and file."""
    for role, (path, kind) in writes.items():
        if kind != "csv":
            check_output_path(Path(path), role.split()[0] if role.startswith("--") else role, EXAMPLES[kind])
    check_distinct_paths(reads or {}, {role: Path(path) for role, (path, _) in writes.items()})
    for role, (path, kind) in writes.items():
        check_replaceable(Path(path), role, kind)


def beside(path: Path, suffix: str) -> Path:
    """``path`` with another suffix (a checkpoint's history), or ``path`` itself where it has no name."""
    return path.with_suffix(suffix) if path.name else path


EXAMPLES = {"checkpoint": "ckpt.pt", "history": "ckpt.json", "png": "seen.png", "keras": "model.keras",
            "onnx": "model.onnx", "pt2": "model.pt2", "benchmark": "bench.json", "csv": "log.csv"}


def check_replaceable(path: Path, role: str, kind: str) -> None:
    """An existing file at an output path is replaced only when it is what the command writes there (a
    checkpoint by a checkpoint, a PNG by a PNG); anything else is refused before any work."""
    if not os.path.lexists(path):
        return
    what, looks_right = REPLACEABLE[kind]
    if not Path(path).is_file():
        raise UserError(f"{role} {path} exists and is not a regular file; choose another path")
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as e:
        raise UserError(f"{role} {path} exists and cannot be read ({e.strerror}); choose another path") from None
    if not looks_right(head):
        raise UserError(f"{role} {path} exists and is not {what}: it would be replaced; choose another path "
                        "or remove it first")


def data_files(data_dir: Optional[str], dataset: str = "mnist", splits=("train", "test")) -> Dict[str, Path]:
    """The idx files a command reads (so that no output can land on one of them)."""
    from ..data.registry import dataset_info, resolve_data_root
    from ..data.idx import SPLIT_FILES

    folder = resolve_data_root(data_dir) / dataset_info(dataset).folder / "raw"
    return {f"the data file {name}": folder / name for split in splits for name in SPLIT_FILES[split]}
