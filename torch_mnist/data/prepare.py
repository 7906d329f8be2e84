"""Install local idx files (gzip'd or not, any of the usual names) into a data root, validated."""

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import List

from . import idx
from .mnist import raw_folder
from ..errors import UserError


def candidate_names(name: str) -> List[str]:
    """The spellings a file of ``name`` goes by: ``train-images-idx3-ubyte`` or
    ``train-images.idx3-ubyte``, each plain or ``.gz``."""
    dotted = name.replace("-idx", ".idx")
    return [name, dotted, name + ".gz", dotted + ".gz"]


def find_source(source: Path, name: str) -> Path:
    for candidate in candidate_names(name):
        if (source / candidate).is_file():
            return source / candidate
    raise UserError(f"{source}: no {name} (looked for {', '.join(candidate_names(name))})")


def _copy_uncompressed(source: Path, target: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as reader, open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{source}: cannot be read or decompressed into {target.parent} ({e})") from None


def prepare_dataset(dataset: str, source: Path, data_root: Path) -> Path:
    """Copy the four files of ``dataset`` from ``source`` into ``data_root`` in torchvision's layout.

    All four are decompressed and validated (magic, sizes, counts, labels) in a
    staging folder first; only then are they moved in, one atomic rename each,
    so a bad source never replaces good files. Returns the raw folder.
    """
    source, target = Path(source), raw_folder(data_root, dataset)
    if not source.is_dir():
        raise UserError(f"--source {source}: not a folder")
    found = {name: find_source(source, name) for name in idx.RAW_FILES}
    try:
        target.mkdir(parents=True, exist_ok=True)
        staging_folder = tempfile.TemporaryDirectory(dir=target, prefix=".staging-")
    except OSError as e:
        raise UserError(f"--data-dir {data_root}: cannot write {target} ({e.strerror})") from None
    with staging_folder as staging:
        staging = Path(staging)
        for name, path in found.items():
            _copy_uncompressed(path, staging / name)
        for split in idx.SPLIT_FILES:
            idx.check_split(staging, split)
        for name in idx.RAW_FILES:
            os.replace(staging / name, target / name)
    return target
