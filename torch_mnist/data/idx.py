"""Checks of raw MNIST idx files: header, sizes, counts, label range, checksums."""

import hashlib
import struct
from pathlib import Path

import numpy as np

from ..errors import UserError

IMAGES_MAGIC = 0x00000803  # idx3: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # idx1: unsigned bytes, 1 dimension
IMAGE_SIDE = 28

# File names per split, as torchvision.datasets.MNIST reads them from <root>/MNIST/raw.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
RAW_FILES = SPLIT_FILES["train"] + SPLIT_FILES["test"]

# MD5 of the uncompressed files of the official release, as published with it.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _read(path: Path, size: int = -1) -> bytes:
    """The first ``size`` bytes of ``path`` (all by default); an unreadable file is the user's to fix."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None


def _read_header(path: Path, magic: int, dims: int) -> tuple:
    """Return the idx dimensions after checking the magic number and file size."""
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    header_size = 4 * (1 + dims)
    header = _read(path, header_size)
    if len(header) < header_size:
        raise UserError(f"{path}: truncated idx file ({len(header)} bytes, shorter than its header)")
    found, *shape = struct.unpack(f">{1 + dims}I", header)
    if found != magic:
        raise UserError(f"{path}: not an idx file of this kind (magic number 0x{found:08x}, "
                        f"expected 0x{magic:08x})")
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    actual_size = path.stat().st_size
    if actual_size != expected_size:
        raise UserError(f"{path}: {actual_size} bytes but its header {tuple(shape)} needs {expected_size}; "
                        "the file is truncated or corrupted")
    return tuple(shape)


def check_images_file(path: Path) -> int:
    """Validate an idx3 file of 28x28 images; return the number of images."""
    count, rows, cols = _read_header(Path(path), IMAGES_MAGIC, 3)
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise UserError(f"{path}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    return count


def check_labels_file(path: Path, num_classes: int = 10) -> int:
    """Validate an idx1 label file with labels in [0, num_classes); return the count."""
    (count,) = _read_header(Path(path), LABELS_MAGIC, 1)
    labels = np.frombuffer(_read(path), dtype=np.uint8, offset=8)
    if count and labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise UserError(f"{path}: label {labels[bad]} at index {bad} is outside 0-{num_classes - 1}")
    return count


def check_split(raw_folder: Path, split: str) -> int:
    """Validate one split's image and label files together; return its size."""
    images_name, labels_name = SPLIT_FILES[split]
    num_images = check_images_file(Path(raw_folder) / images_name)
    num_labels = check_labels_file(Path(raw_folder) / labels_name)
    if num_images != num_labels:
        raise UserError(f"{raw_folder}: {images_name} holds {num_images} images but "
                        f"{labels_name} holds {num_labels} labels")
    return num_images


def verify_checksums(raw_folder: Path) -> None:
    """Compare the four files against the official release's MD5 sums."""
    for name, expected in OFFICIAL_MD5.items():
        path = Path(raw_folder) / name
        if not path.is_file():
            raise UserError(f"{path}: missing; cannot verify the MNIST files")
        digest = hashlib.md5(_read(path)).hexdigest()
        if digest != expected:
            raise UserError(f"{path}: MD5 {digest} differs from the official release's {expected}")
