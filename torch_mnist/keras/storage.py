"""What a Keras file declares, read without trusting it: zip members unpacked no further than a bound, HDF5
datasets and groups checked (their storage in this file, their shape) before a byte is read, JSON checked for
depth before it is parsed. numpy and h5py only."""

import json
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import UserError, printable

MAX_JSON_DEPTH = 100  # a description of this family nests ~10 levels; one nested deeper is refused


def member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    if info.file_size > limit:
        raise UserError(f"{path}: refused: its {printable(info.filename)} declares {info.file_size:,} bytes, "
                        f"more than {limit:,}")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: refused: its {printable(info.filename)} holds more than it declares")
    return data


def unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, out, path: Path) -> None:
    """``info``'s bytes into the file ``out``, refused beyond ``limit`` (declared or actual)."""
    if info.file_size > limit:
        raise UserError(f"{path}: refused: its {info.filename} declares {info.file_size:,} bytes, more than "
                        f"a model of its description needs ({limit:,})")
    written = 0
    with archive.open(info) as member:
        while chunk := member.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise UserError(f"{path}: refused: its {info.filename} unpacks to more than {limit:,} bytes")
            out.write(chunk)
    out.seek(0)


def member(group, name: str, path: Path):
    """``group[name]`` (a path of several parts too), each part a link within this file: a soft or external
    link could point anywhere, even into another file."""
    import h5py

    for part in [p for p in name.split("/") if p]:
        link = group.get(part, getlink=True)
        if link is None:
            raise UserError(f"{path}: the weights file holds no {printable(name)}: it does not match its "
                            "description")
        if not isinstance(link, h5py.HardLink):
            raise UserError(f"{path}: refused: {printable(name)} is a link ({type(link).__name__}), which could "
                            "point outside the file")
        group = group[part]
    return group


def parse_json(data, path: Path) -> dict:
    text = data.decode() if isinstance(data, bytes) else data
    # A description nests a few levels (model, layers, config, nodes): far fewer than this. Counted before
    # parsing, so no document can recurse the parser or our walks through it.
    depth = deepest = 0
    for character in text:
        if character in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise UserError(f"{path}: refused: the model's description nests deeper than {MAX_JSON_DEPTH} "
                                "levels")
        elif character in "]}":
            depth -= 1
    value = json.loads(text)
    if not isinstance(value, dict):
        raise UserError(f"{path}: the model's description is not a JSON object")
    return value


def read_dataset(dataset, name: str, shape: Tuple[int, ...], path: Path) -> np.ndarray:
    """An HDF5 dataset's floats, after :func:`check_dataset`."""
    check_dataset(dataset, name, shape, path)
    return np.asarray(dataset[()])


def check_dataset(dataset, name: str, shape: Tuple[int, ...], path: Path) -> None:
    """That an HDF5 dataset holds its data in this file (no external files, no virtual sources), has
    ``shape`` and holds floats: read nothing of a dataset before this says yes."""
    if not hasattr(dataset, "shape") or not hasattr(dataset, "dtype"):
        raise UserError(f"{path}: {printable(name)} is not an array")
    if dataset.external or dataset.is_virtual:
        raise UserError(f"{path}: refused: {printable(name)} takes its data from other files "
                        f"({'virtual' if dataset.is_virtual else 'external storage'})")
    if tuple(dataset.shape) != tuple(shape):
        raise UserError(f"{path}: {printable(name)} has shape {list(dataset.shape)} where the model needs "
                        f"{list(shape)}")
    if not np.issubdtype(dataset.dtype, np.floating):
        raise UserError(f"{path}: {printable(name)} holds {dataset.dtype}, not floating-point numbers")
