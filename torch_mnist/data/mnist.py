"""MNIST-like datasets through torchvision: validated files, the download, and normalization."""

import gzip
import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets, transforms

from . import idx
from .registry import DATA_ENV_VAR, DatasetInfo, dataset_info
from ..errors import UserError, one_line
from ..files import atomic_write

DOWNLOAD_TIMEOUT_SECONDS = 60  # a stalled connection fails the download instead of hanging it
MAX_DOWNLOAD_BYTES = 64 * 2 ** 20  # the largest of these gzipped files is under 30 MB


def torchvision_class(info: DatasetInfo) -> type:
    """The torchvision dataset class that reads ``info``'s files."""
    return getattr(datasets, info.torchvision_name)


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model inputs: ``(pixel / 255 - mean) / std``."""

    name: str
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def named(cls, name: str, dataset: str = "mnist") -> "Normalization":
        """``scale`` (the reference: x / 255) or ``standardize`` with ``dataset``'s statistics."""
        if name == "scale":
            return cls("scale")
        if name == "standardize":
            info = dataset_info(dataset)
            return cls("standardize", info.mean, info.std)
        raise UserError(f"unknown normalization {name!r}; choose scale or standardize")

    def per_image_transform(self) -> transforms.Compose:
        """The torchvision transform for one PIL image -> (1, 28, 28) float tensor."""
        steps = [transforms.ToTensor()]
        if self.name != "scale":
            steps.append(transforms.Normalize((self.mean,), (self.std,)))
        return transforms.Compose(steps)

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """The same arithmetic as :meth:`per_image_transform` on a whole uint8 tensor.

        Bit-for-bit equal to the per-image path (the tests check it): the same
        float32 division by 255, then the same in-place subtract and divide.
        """
        x = pixels.to(torch.float32, copy=True).div_(255)  # in place: no second 188 MB copy
        if self.name != "scale":
            x.sub_(torch.as_tensor(self.mean)).div_(torch.as_tensor(self.std))
        return x

    def background(self) -> float:
        """The value a pixel of 0 (MNIST's paper) becomes."""
        return float(self.apply(torch.zeros((), dtype=torch.uint8)))

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": self.mean, "std": self.std}


def raw_folder(root: Path, dataset: str = "mnist") -> Path:
    """Where torchvision looks for a dataset's four idx files."""
    return Path(root) / dataset_info(dataset).folder / "raw"


def load_mnist(root: Path, train: bool, transform=None, download: bool = True,
               dataset: str = "mnist") -> datasets.MNIST:
    """A torchvision split of MNIST (or ``dataset``), after validating its raw files.

    Downloads only when the files are absent; when that fails (e.g. offline),
    raises :class:`UserError` naming the folder searched and the files expected.
    """
    root, folder = Path(root), raw_folder(root, dataset)
    split = "train" if train else "test"
    if not all((folder / name).exists() for name in idx.SPLIT_FILES[split]):
        _download(root, folder, download, dataset)
    idx.check_split(folder, split)  # only this split's files: evaluating needs no training files
    return _split_class(torchvision_class(dataset_info(dataset)))(str(root), train=train, transform=transform,
                                                                  download=False)


_SPLIT_CLASSES: dict = {}


def _split_class(base: type) -> type:
    """torchvision's class, trusting :func:`idx.check_split` for the split it reads: torchvision itself wants
    all four files to be regular files, even the other split's, and says only "Dataset not found"."""
    if base not in _SPLIT_CLASSES:  # the same name: torchvision finds its files under <root>/<class name>/raw
        _SPLIT_CLASSES[base] = type(base.__name__, (base,), {"_check_exists": lambda self: True,
                                                             "__module__": base.__module__})
    return _SPLIT_CLASSES[base]


def _download(root: Path, folder: Path, allowed: bool, dataset: str) -> None:
    info = dataset_info(dataset)
    missing = (f"{info.folder} files not found in {folder} (expected {', '.join(idx.RAW_FILES)}); "
               f"point --data-dir or ${DATA_ENV_VAR} at the folder that contains {info.folder}/raw")
    if not allowed:
        raise UserError(missing)
    created = [p for p in (root, root / info.folder, folder) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dataset_class = torchvision_class(info)
        for filename, md5 in dataset_class.resources:
            _fetch(dataset_class.mirrors, filename, md5, folder)
    except Exception as e:  # URLError, OSError, a bad checksum, a broken archive
        for folder in reversed(created):  # leave no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise UserError(f"{missing}; download failed: {one_line(e, line=-1)}") from None


def _fetch(mirrors: list, filename: str, md5: str, folder: Path) -> None:
    """One gzipped idx file from the first mirror that serves it whole, unpacked into ``folder``.

    Each request carries its own timeout (torchvision's downloader has none, and setting the
    process-wide default would change every other socket of the caller's)."""
    errors = []
    for mirror in mirrors:
        try:
            with urllib.request.urlopen(f"{mirror}{filename}", timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
                data = response.read(MAX_DOWNLOAD_BYTES + 1)
            if len(data) > MAX_DOWNLOAD_BYTES or hashlib.md5(data).hexdigest() != md5:
                raise OSError(f"{filename} from {mirror} is not the published file (checksum differs)")
            unpacked = gzip.decompress(data)
        except (OSError, EOFError, ValueError) as e:  # URLError and timeouts are OSErrors
            errors.append(f"{mirror}: {one_line(e, line=-1)}")
            continue
        atomic_write(folder / filename[:-len(".gz")], lambda f: f.write(unpacked))
        return
    raise OSError(f"could not download {filename} ({'; '.join(errors)})")
