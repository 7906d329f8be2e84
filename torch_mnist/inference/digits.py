"""Your own digit image, however it was saved -> the 28x28 image MNIST would have made of it.

MNIST digits are white ink on black, cropped to the ink, scaled so the longer
side is 20 px (anti-aliased) and pasted into 28x28 with the ink's centre of
mass at the centre. :func:`preprocess_image` does the same to any image: a
28x28 MNIST digit saved as PNG, a browser canvas export with a transparent
background, a thin-pen drawing, a phone photo of paper. Every length it works
with is relative to the image or to the ink, so it holds from 28 px to photos.
Needs Pillow and numpy only (no torch), so a deployed model can use it too.
"""

import io
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw, ImageFilter, ImageOps, UnidentifiedImageError

from ..errors import UserError
from .ink import find_ink

CANVAS = 28
DIGIT_BOX = 20  # MNIST's digits fit a 20x20 box inside the 28x28 canvas
WORK_MAX = 256  # larger images are reduced to this longer side before the ink is looked for
MNIST_STROKE = 0.12  # MNIST strokes are ~2.5 px of the 20 px box; thinner ink is thickened to this
THIN_STROKE = 0.06  # ... when it is thinner than this fraction of the digit's longer side
THICK_STROKE = 0.25  # ... and ink thicker than this thinned to it (the thickest of 5,000 MNIST test digits: 0.24)


class BlankImage(UserError):
    """An image with no ink on it (a cleared canvas, an empty page)."""


def preprocess_image(source: Union[Path, str, bytes], max_pixels: Optional[int] = None) -> np.ndarray:
    """A digit image (a file's path, or its bytes) as MNIST would have stored it: 28x28 uint8, white on black.

    ``max_pixels``: refuse larger images from their header, before decoding them (a server's bound on memory;
    without it, only decompression bombs of ~90 million pixels are refused)."""
    name = "image" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise UserError(f"{path}: no such file")
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not an image")
        if not path.is_file():  # a FIFO or a device would block or never end
            raise UserError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # no digit needs ~90 million pixels
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.seek(0)  # the first frame of an animated GIF
                if max_pixels is not None and image.width * image.height > max_pixels:
                    raise UserError(f"{name}: refused: {image.width}x{image.height} pixels, more than the "
                                    f"{max_pixels:,} accepted here")
                if image.format == "JPEG":  # a photo decoded at a fraction of its size: the ink needs no more
                    image.draft(image.mode, (WORK_MAX, WORK_MAX))
                image.load()
                pixels = _pixels_on_paper(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{name}: refused: its declared size is larger than any digit image needs "
                        f"(over {Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as e:  # Pillow's decoders vary
        raise UserError(f"{name}: not a readable image ({e.__class__.__name__})") from None
    try:
        return to_mnist_canvas(ink_of(pixels))
    except BlankImage as e:
        raise BlankImage(f"{name}: {e}") from None


def _pixels_on_paper(image: Image.Image) -> np.ndarray:
    """Levels 0-255 (float32), (H, W, 1) for grey images and (H, W, 3) for colour ones, upright, with
    transparent areas turned into paper."""
    image = ImageOps.exif_transpose(image)  # a phone photo taken sideways
    if image.mode.startswith("I") or image.mode == "F":  # 16- and 32-bit grey: scale, do not clip at 255
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        return (np.clip(values, 0, top) * (255.0 / top)).astype(np.float32)[..., None]
    grey = image.mode in ("1", "L", "LA", "La") or (image.mode == "P" and _grey_palette(image))
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        colour = rgba[..., :1] if grey or _equal_channels(rgba[..., :3]) else rgba[..., :3]
        alpha = rgba[..., 3:] / 255.0
        opaque = alpha[..., 0] > 0.5
        # Transparent is paper: white under dark strokes (a canvas export), black under light ones.
        paper = 255.0 if not opaque.any() or colour[opaque].mean() < 128 else 0.0
        return alpha * colour + (1.0 - alpha) * paper
    # 8-bit levels are reduced to the working size as they are, all channels at once, a large image first by
    # whole-pixel box averages to within 2x of it (reducing_gap): several times cheaper than the float path of
    # _resample, on average within a grey level of it (a few levels at the sharpest edges).
    image = image.convert("L" if grey else "RGB")
    size = _working_size(image.width, image.height)
    if size != image.size:
        image = image.resize(size, Image.BICUBIC, reducing_gap=2.0)
    levels = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, -1)
    return levels[..., :1] if levels.shape[2] == 3 and _equal_channels(levels) else levels


def _equal_channels(colour: np.ndarray) -> bool:
    """Whether a colour image (H, W, 3) is grey: a grey page saved as RGB, a canvas's black strokes. Its ink
    is then found in one channel, at a third of the cost, with the same result."""
    return bool(np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]))


def _grey_palette(image: Image.Image) -> bool:
    palette = np.asarray(image.getpalette() or [0, 0, 0], dtype=np.int64).reshape(-1, 3)
    return bool((palette.max(axis=1) == palette.min(axis=1)).all())


def _resample(pixels: np.ndarray) -> np.ndarray:
    """Bring the longer side to at most WORK_MAX, for a bounded cost; smaller images are worked on as
    they are, so that a 28x28 MNIST digit comes back as it was."""
    size = _working_size(pixels.shape[1], pixels.shape[0])
    if size == (pixels.shape[1], pixels.shape[0]):
        return pixels
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(size, Image.BICUBIC))
                for c in range(pixels.shape[2])]
    return np.clip(np.stack(channels, axis=-1), 0, 255)


def _working_size(width: int, height: int) -> Tuple[int, int]:
    """(width, height) with the longer side brought to at most WORK_MAX."""
    scale = min(1.0, WORK_MAX / max(width, height))
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else (width, height)


def ink_of(pixels: np.ndarray) -> np.ndarray:
    """Bright ink (0-255) on a zero background, whatever the input looked like: (H, W) grey levels or
    (H, W, C) channels in 0-255."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return find_ink(_resample(pixels if pixels.ndim == 3 else pixels[..., None]))


def _stroke_width(mask: np.ndarray) -> float:
    """A stroke's mean width: its area over half its outline's length (exact for a long thin bar)."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    mask = np.pad(mask, 1)  # the image's edge is the stroke's edge too
    inner = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(3))) > 0
    outline = max(1, int((mask & ~inner).sum()))
    return 2.0 * area / outline


def _max_filter(values: np.ndarray, size: int) -> np.ndarray:
    """Each pixel's maximum over the ``size`` x ``size`` square around it (odd ``size``; the edge repeated
    beyond the image): Pillow's MaxFilter, as a row pass and a column pass, so its cost grows with ``size``
    rather than with its square (a page-sized thin-pen drawing needs a window of ~30 px)."""
    reach = size // 2
    padded = np.pad(values, reach, mode="edge")
    rows = sliding_window_view(padded, size, axis=1).max(axis=-1)
    return sliding_window_view(rows, size, axis=0).max(axis=-1)


def to_mnist_canvas(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, thicken a thin pen's strokes to MNIST's, fit the longer side to 20 px,
    centre by mass in 28x28 (uint8)."""
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        raise BlankImage("blank image: no ink found")
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    longer = max(crop.shape)
    width = _stroke_width(crop > 0.5 * crop.max())
    if width < THIN_STROKE * longer:
        grow = int(round(MNIST_STROKE * longer - width)) | 1  # a max filter of odd size widens by size - 1
        crop = np.pad(crop, grow // 2)
        crop = _max_filter(crop.astype(np.float32), grow)
    elif width > THICK_STROKE * longer:  # a marker: its strokes brought back to MNIST's width (a min filter)
        shrink = int(round(width - MNIST_STROKE * longer)) | 1
        crop = -_max_filter(-crop.astype(np.float32), shrink)
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS), dtype=np.float32)
    total = digit.sum()
    if total == 0:
        raise BlankImage("blank image: the ink vanished when scaled to 20 px")
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = min(max(int(round(CANVAS / 2 - centre_y)), 0), CANVAS - digit.shape[0])  # the whole digit on the canvas
    left = min(max(int(round(CANVAS / 2 - centre_x)), 0), CANVAS - digit.shape[1])
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return np.clip(canvas, 0, 255).astype(np.uint8)


TILE = 4 * CANVAS  # each 28x28 input drawn 4x, with crisp pixels
CAPTION = 28


def input_strip(images: Sequence[Optional[np.ndarray]], captions: Sequence[str]) -> Image.Image:
    """The inputs the model saw, side by side, enlarged, each captioned (file name, prediction);
    an image that could not be used is a crossed-out tile."""
    strip = Image.new("RGB", (len(images) * (TILE + 8), TILE + CAPTION), "white")
    draw = ImageDraw.Draw(strip)
    for k, (pixels, caption) in enumerate(zip(images, captions)):
        x = k * (TILE + 8)
        if pixels is None:
            draw.rectangle((x, 0, x + TILE - 1, TILE - 1), fill=(255, 205, 205), outline=(200, 40, 40))
            draw.line((x, 0, x + TILE - 1, TILE - 1), fill=(200, 40, 40), width=3)
            draw.line((x, TILE - 1, x + TILE - 1, 0), fill=(200, 40, 40), width=3)
        else:
            strip.paste(Image.fromarray(pixels).resize((TILE, TILE), Image.NEAREST), (x, 0))
        for line, text in enumerate(_wrap(caption, TILE)):
            draw.text((x + 2, TILE + 2 + 12 * line), text, fill="black")
    return strip


def _wrap(text: str, width: int) -> List[str]:
    """Two lines of at most ``width`` pixels of Pillow's default font (~6 px a character)."""
    per_line = max(4, width // 6)
    return [text[i:i + per_line] for i in range(0, min(len(text), 2 * per_line), per_line)]
