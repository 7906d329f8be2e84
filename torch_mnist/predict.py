"""Your own digit images -> MNIST-style 28x28 inputs -> predictions.

MNIST digits are white ink on black, cropped to the ink, scaled so the longer
side is 20 px (anti-aliased) and pasted into 28x28 with the ink's centre of
mass at the centre. :func:`preprocess_image` does the same to a photo or scan.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter, UnidentifiedImageError

from .data import Normalization
from .errors import UserError

CANVAS = 28
DIGIT_BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 canvas
WORK_SIDE = 256  # large inputs are reduced to this first: enough detail, bounded cost


@dataclass
class Prediction:
    path: str
    prediction: Optional[int] = None
    top3: Optional[List[list]] = None  # [[digit, probability], ...]
    error: Optional[str] = None
    pixels: Optional[np.ndarray] = None  # the 28x28 uint8 image the model saw

    def to_dict(self) -> dict:
        result = {"path": self.path, "prediction": self.prediction, "top3": self.top3}
        if self.error is not None:
            result["error"] = self.error
        return result


def _otsu_threshold(pixels: np.ndarray) -> float:
    """The grey level that best separates ink from background (Otsu's method)."""
    histogram = np.bincount(pixels.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(histogram * levels) / np.maximum(weight_low, 1)
    mean_high = ((histogram * levels).sum() - np.cumsum(histogram * levels)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(np.argmax(between))


def _ink_image(image: Image.Image) -> np.ndarray:
    """Grey levels with bright ink on a zero background, whatever the input looked like."""
    gray = image.convert("L")
    if max(gray.size) > WORK_SIDE:
        gray.thumbnail((WORK_SIDE, WORK_SIDE), Image.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if np.median(border) > 127:  # a light background: dark ink on paper, the opposite of MNIST
        pixels = 255.0 - pixels
    # Paper in a photo is never uniformly black after inversion: subtract its smooth
    # background (a wide blur), then keep only what Otsu's threshold calls ink.
    radius = max(pixels.shape) / 8
    background = np.asarray(Image.fromarray(pixels.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
                            dtype=np.float32)
    flattened = np.clip(pixels - np.minimum(background, pixels), 0, 255)
    if flattened.max() < 32:  # no stroke stands out from the paper
        return np.zeros_like(flattened)
    threshold = _otsu_threshold(flattened)
    ink = np.where(flattened > threshold, flattened, 0.0)
    # An opening (min then max filter) removes specks smaller than a stroke.
    mask = Image.fromarray(((ink > 0) * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(3))
    mask = np.asarray(mask.filter(ImageFilter.MaxFilter(3))) > 0
    ink = np.where(mask, ink, 0.0)
    return ink * (255.0 / ink.max()) if ink.max() > 0 else ink


def to_mnist_canvas(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, fit the longer side to 20 px, centre by mass in 28x28 (uint8)."""
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        raise UserError("blank image: no ink found")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float32)
    total = digit.sum()
    if total == 0:
        raise UserError("blank image: the ink vanished when scaled to 20 px")
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(round(CANVAS / 2 - centre_y))
    left = int(round(CANVAS / 2 - centre_x))
    top = min(max(top, 0), CANVAS - digit.shape[0])  # keep the whole digit on the canvas
    left = min(max(left, 0), CANVAS - digit.shape[1])
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(canvas, 0, 255).astype(np.uint8)


def preprocess_image(path: Path) -> np.ndarray:
    """A digit image file as MNIST would have stored it: 28x28 uint8, white ink on black."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not an image")
    try:
        with Image.open(path) as image:
            image.seek(0)  # the first frame of an animated GIF
            image.load()
            ink = _ink_image(image)
    except Image.DecompressionBombError:
        raise UserError(f"{path}: refused: its declared size is larger than any digit image needs "
                        f"(over {2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as e:  # Pillow's decoders vary
        raise UserError(f"{path}: not a readable image ({e.__class__.__name__})") from None
    try:
        return to_mnist_canvas(ink)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


@torch.no_grad()
def predict_pixels(model: torch.nn.Module, pixels: np.ndarray, normalization: Normalization,
                   device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Class probabilities (N, 10) for uint8 images shaped (N, 28, 28)."""
    images = normalization.apply(torch.from_numpy(np.ascontiguousarray(pixels))).flatten(1).to(device)
    model.eval()
    return torch.softmax(model(images), dim=1).cpu()


def predict_files(model: torch.nn.Module, paths: Sequence[Path], normalization: Normalization,
                  device: torch.device = torch.device("cpu")) -> List[Prediction]:
    """One :class:`Prediction` per path; an unreadable or blank image gets ``error`` instead."""
    results, readable = [], []
    for path in paths:
        try:
            results.append(Prediction(str(path), pixels=preprocess_image(Path(path))))
            readable.append(results[-1])
        except UserError as e:
            results.append(Prediction(str(path), error=str(e)))
    if readable:
        probabilities = predict_pixels(model, np.stack([r.pixels for r in readable]), normalization, device)
        for result, row in zip(readable, probabilities):
            top = torch.topk(row, 3)
            result.prediction = int(top.indices[0])
            result.top3 = [[int(i), round(float(p), 6)] for p, i in zip(top.values, top.indices)]
    return results
