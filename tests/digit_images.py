"""MNIST digits captured the ways people capture them: seeded, randomised families of images.

Each family draws every property of a capture from a wide range (paper level and tint,
sensor noise, light falloff, tilt, blur, pen colour and width, digit scale and place,
format and JPEG quality), so that no fixed handful of images can be tuned to. A capture
also returns the digit as the ideal preprocessing would see it (the source digit turned
by the same tilt), so that a test can compare the 28x28 result with its source without
any model.
"""

import functools
import io
from dataclasses import dataclass
from typing import Callable, Dict, NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from torch_mnist.inference.digits import _max_filter


@dataclass
class Capture:
    data: bytes  # the saved file
    ideal: np.ndarray  # the source digit's ink (float32, 0-255) turned by the capture's tilt, before any damage


def _save(image: Image.Image, rng: np.random.Generator, jpeg_share: float, quality=(30, 95)) -> bytes:
    buffer = io.BytesIO()
    if rng.random() < jpeg_share:
        image.convert("RGB" if image.mode == "RGB" else "L").save(
            buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    else:
        image.save(buffer, format="PNG", compress_level=0)  # the pixels are what matter, not the file's size
    return buffer.getvalue()


MNIST_STROKE = 2.5 / 28  # an MNIST stroke's width, of the image's side


def _ink(pixels: np.ndarray, side: int, rng: np.random.Generator, width=(1, 1)) -> np.ndarray:
    """The digit's ink scaled to ``side`` px, its pen ``width`` (a range) times MNIST's (float 0-1)."""
    ink = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR), dtype=np.float32)
    change = int(round((rng.uniform(*width) - 1) * MNIST_STROKE * side / 2))  # pixels added on each side
    if change:  # Pillow's MaxFilter or MinFilter, as a row pass and a column pass
        size = 2 * abs(change) + 1
        ink = _max_filter(ink, size) if change > 0 else -_max_filter(-ink, size)
    return ink / 255.0


def _photograph(pixels: np.ndarray, rng: np.random.Generator, *, scale, paper, noise, falloff, tilt, blur,
                pen, tint=0.0, width=(1, 1), jpeg_share=0.5, quality=(30, 95), margin=(0.2, 1.5),
                table=None) -> Capture:
    """A digit written on a sheet and photographed: every argument a (low, high) range to draw from."""
    def draw(bounds):
        return float(rng.uniform(*bounds))

    side = int(round(28 * draw(scale)))
    ink = _ink(pixels, side, rng, width)
    height = side + int(side * draw(margin)) + int(side * draw(margin))
    widths = side + int(side * draw(margin)) + int(side * draw(margin))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, widths - side + 1))
    sheet = np.zeros((height, widths), dtype=np.float32)
    sheet[top:top + side, left:left + side] = ink
    angle = draw((-tilt, tilt))
    # The sheet fills the photo, or (``table``) lies turned on a darker table that shows at the corners.
    if table:
        on_sheet = np.asarray(Image.new("F", (widths, height), 1.0).rotate(angle, Image.BILINEAR, expand=True))
    sheet = np.asarray(Image.fromarray(sheet).rotate(angle, Image.BILINEAR, expand=bool(table)), dtype=np.float32)
    height, widths = sheet.shape
    ideal = np.asarray(Image.fromarray(ink).rotate(angle, Image.BILINEAR, expand=True), dtype=np.float32) * 255
    paper_level = draw(paper)
    paper_colour = paper_level * (1 - tint * rng.uniform(0, 1, 3))  # off-white: each channel a little lower
    pen_colour = np.asarray(pen(rng), dtype=np.float32)
    grey = np.ptp(pen_colour) == 0 and tint == 0
    # A grey capture's three channels are equal until the sensor's noise: worked on as one until then.
    channels = slice(0, 1) if grey else slice(0, 3)
    image = sheet[..., None] * pen_colour[channels] + (1 - sheet[..., None]) * paper_colour[channels]  # (H, W, C)
    if table:
        image = on_sheet[..., None] * image + (1 - on_sheet[..., None]) * draw(table)
    # Light falling off across the sheet: a linear ramp in a random direction.
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.arange(height)[:, None], np.arange(widths)[None, :]
    ramp = (np.cos(direction) * xs / widths + np.sin(direction) * ys / height)
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    image = image * (1 - draw(falloff) * ramp)[..., None]
    radius = draw(blur)
    if radius > 0.05:
        levels = np.clip(np.round(image), 0, 255).astype(np.uint8)
        blurred = Image.fromarray(levels[..., 0] if grey else levels, "L" if grey else "RGB")
        image = np.asarray(blurred.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32).reshape(image.shape)
    image = image + rng.normal(0, draw(noise), (height, widths, 3))  # each channel's own noise
    saved = Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8), "RGB")
    if grey:
        saved = saved.convert("L")
    return Capture(_save(saved, rng, jpeg_share, quality), ideal)


def render_on_page(pixels: np.ndarray, path, size=224, canvas=(480, 360), offset=(30, 90)):
    """An MNIST digit as a large black-on-white image with margins, off centre, saved at ``path``."""
    page = Image.new("L", canvas, 255)
    page.paste(Image.fromarray(255 - pixels).resize((size, size), Image.BILINEAR), offset)
    page.save(path)
    return path


def _dark_pen(rng):
    return [float(rng.uniform(0, 70))] * 3


def _coloured_pen(rng):
    kind = rng.integers(0, 3)
    if kind == 0:  # blue ballpoint
        return [rng.uniform(0, 60), rng.uniform(20, 90), rng.uniform(110, 200)]
    if kind == 1:  # red
        return [rng.uniform(150, 210), rng.uniform(0, 50), rng.uniform(0, 60)]
    return [rng.uniform(0, 40), rng.uniform(70, 130), rng.uniform(0, 60)]  # green


def _digital(pixels: np.ndarray, rng: np.random.Generator) -> Capture:
    """Saved by a program: 28x28 as MNIST stores it, inverted, scaled up, or a canvas export."""
    kind = int(rng.integers(0, 4))
    side = 28 if kind < 2 else int(28 * rng.uniform(1, 10))
    ink = _ink(pixels, side, rng)
    if kind == 0:
        image = Image.fromarray(pixels)
    elif kind == 1:
        image = Image.fromarray(255 - pixels)
    elif kind == 2:
        image = Image.fromarray((ink * 255).astype(np.uint8))
    else:  # a browser canvas: black strokes whose alpha is the ink, on full transparency
        alpha = Image.fromarray((ink * 255).astype(np.uint8))
        image = Image.merge("RGBA", (Image.new("L", alpha.size, 0),) * 3 + (alpha,))
    return Capture(_save(image, rng, 0.0), ink * 255)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning: a boolean image reduced to lines one pixel wide."""
    image = np.pad(mask.astype(np.uint8), 1)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            around = {(dy, dx): np.roll(np.roll(image, -dy, 0), -dx, 1)
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)}
            # P2..P9 clockwise from the pixel above
            p = [around[d] for d in ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]
            neighbours = sum(p)
            transitions = sum(((p[i] == 0) & (p[(i + 1) % 8] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                keep_shape = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
            else:
                keep_shape = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
            remove = (image == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & keep_shape
            if remove.any():
                image = (image & ~remove).astype(np.uint8)
                changed = True
    return image[1:-1, 1:-1].astype(bool)


def thin_pen(pixels: np.ndarray, side: int = 200, width: int = 2) -> Image.Image:
    """The digit redrawn with a pen ``width`` pixels wide, dark on white, on a ``side``-pixel page."""
    strokes = skeleton(np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR)) > 96)
    pen = Image.fromarray((strokes * 255).astype(np.uint8))
    if width > 1:
        pen = pen.filter(ImageFilter.MaxFilter(width | 1))
    return Image.fromarray(255 - np.asarray(pen))


def _thin_pen(pixels: np.ndarray, rng: np.random.Generator) -> Capture:
    """Drawn in a program with a thin pen: the digit's skeleton 1-3 px wide on a 100-300 px page."""
    side = int(rng.integers(100, 301))
    drawing = thin_pen(pixels, side, int(rng.integers(1, 4)))
    return Capture(_save(drawing, rng, 0.0), 255 - np.asarray(drawing, dtype=np.float32))


def _on_paper(ink: np.ndarray, rng: np.random.Generator, *, paper=(170, 255), pen=(0, 70), noise=(0, 8),
              jpeg_share=0.5, blur=(0, 0)) -> bytes:
    """Ink (float 0-1) as a grey pen on grey paper, blurred and noisy, saved as PNG or JPEG."""
    paper_level, pen_level = rng.uniform(*paper), rng.uniform(*pen)
    image = ink * pen_level + (1 - ink) * paper_level
    radius = rng.uniform(*blur)
    if radius > 0.05:
        image = np.asarray(Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    image = image + rng.normal(0, rng.uniform(*noise), image.shape)
    return _save(Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)), rng, jpeg_share)


def _tight_crop(pixels: np.ndarray, rng: np.random.Generator) -> Capture:
    """A scan cropped to the ink with 0-2 px of margin on each side (so one to four edges touched) and
    enlarged, the way digits from other datasets and web pages come: the ink is most of the image."""
    side = int(round(28 * rng.uniform(2, 12)))
    ink = _ink(pixels, side, rng, width=(0.8, 1.6))
    rows, cols = np.nonzero(ink > 0.1)
    margins = rng.integers(0, 3, 4)  # top, bottom, left, right
    top, bottom = max(rows.min() - margins[0], 0), min(rows.max() + 1 + margins[1], side)
    left, right = max(cols.min() - margins[2], 0), min(cols.max() + 1 + margins[3], side)
    crop = ink[top:bottom, left:right]
    return Capture(_on_paper(crop, rng, paper=(190, 255), noise=(0, 6), blur=(0, 1.0)), crop * 255)


def _low_resolution(pixels: np.ndarray, rng: np.random.Generator) -> Capture:
    """A digit that exists only at 8-20 px (a thumbnail, a low-DPI scan), enlarged up to 10x by a viewer."""
    small = int(rng.integers(8, 21))
    margin = int(rng.integers(0, small // 3 + 1))
    ink = _ink(pixels, small, rng)
    page = np.pad(ink, margin)
    size = page.shape[0] * int(rng.integers(2, 11))
    method = [Image.NEAREST, Image.BILINEAR, Image.BICUBIC][int(rng.integers(0, 3))]
    enlarged = np.asarray(Image.fromarray(page.astype(np.float32)).resize((size, size), method), dtype=np.float32)
    # What can be recovered: the small digit, smoothly enlarged (its details are gone at 8-20 px).
    ideal = np.asarray(Image.fromarray(page.astype(np.float32)).resize((size, size), Image.BILINEAR)) * 255
    return Capture(_on_paper(np.clip(enlarged, 0, 1), rng, noise=(0, 6), blur=(0, 1.5)), ideal)


def _broken_or_faint(pixels: np.ndarray, rng: np.random.Generator) -> Capture:
    """A pen running dry: faint ink (25-80 levels from its paper) or strokes with gaps, or both."""
    side = int(round(28 * rng.uniform(3, 10)))
    ink = _ink(pixels, side, rng)
    ideal = ink * 255
    if rng.random() < 0.6:  # gaps: a few small discs of paper across the strokes
        ys, xs = np.nonzero(ink > 0.5)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, len(ys)))
            radius = side * rng.uniform(0.02, 0.05)
            yy, xx = np.ogrid[:side, :side]
            ink = np.where((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= radius ** 2, 0.0, ink)
    paper = rng.uniform(170, 255)
    contrast = rng.uniform(25, 80) if rng.random() < 0.6 else rng.uniform(120, 200)
    page = np.pad(ink, int(side * rng.uniform(0.2, 1.0)))
    return Capture(_on_paper(page, rng, paper=(paper, paper), pen=(paper - contrast, paper - contrast),
                             noise=(0, 4), blur=(0, 1.0)), ideal)


FAMILIES: Dict[str, Callable[[np.ndarray, np.random.Generator], Capture]] = {
    "photo, dark pen on grey or white paper": lambda px, rng: _photograph(
        px, rng, scale=(1.5, 10), paper=(150, 255), noise=(0, 12), falloff=(0, 0.3), tilt=5, blur=(0, 1.2),
        pen=_dark_pen),
    "photo, blue, red or green pen on off-white paper, JPEG": lambda px, rng: _photograph(
        px, rng, scale=(2, 10), paper=(190, 255), noise=(0, 8), falloff=(0, 0.25), tilt=5, blur=(0, 1.0),
        pen=_coloured_pen, tint=0.12, jpeg_share=1.0, quality=(30, 80)),
    "tilted sheet under light falling off": lambda px, rng: _photograph(
        px, rng, scale=(3, 10), paper=(170, 255), noise=(0, 6), falloff=(0.2, 0.5), tilt=15, blur=(0, 1.0),
        pen=_dark_pen),
    "tilted sheet on a darker table": lambda px, rng: _photograph(
        px, rng, scale=(3, 8), paper=(170, 255), noise=(0, 6), falloff=(0, 0.3), tilt=12, blur=(0, 1.0),
        pen=_dark_pen, table=(0, 100)),
    "small blurred scan": lambda px, rng: _photograph(
        px, rng, scale=(1.5, 3), paper=(200, 255), noise=(0, 4), falloff=(0, 0.1), tilt=3, blur=(0.5, 1.2),
        pen=_dark_pen, margin=(0.1, 0.6)),
    "pen width changed, any paper": lambda px, rng: _photograph(
        px, rng, scale=(4, 10), paper=(150, 255), noise=(0, 10), falloff=(0, 0.3), tilt=10, blur=(0, 1.0),
        pen=_dark_pen, width=(0.5, 2.0)),
    "anything: every range at once": lambda px, rng: _photograph(
        px, rng, scale=(1, 10), paper=(150, 255), noise=(0, 12), falloff=(0, 0.5), tilt=15, blur=(0, 1.5),
        pen=lambda r: (_dark_pen if r.random() < 0.5 else _coloured_pen)(r), tint=0.1, width=(0.5, 2.0),
        quality=(30, 95)),
    "saved by a program (28 px, inverted, scaled, canvas export)": _digital,
    "thin pen in a drawing program": _thin_pen,
    "cropped to the ink, edges touched": _tight_crop,
    "low-resolution source enlarged": _low_resolution,
    "thick marker": lambda px, rng: _photograph(
        px, rng, scale=(3, 10), paper=(170, 255), noise=(0, 8), falloff=(0, 0.2), tilt=5, blur=(0, 1.0),
        pen=_dark_pen, width=(1.8, 3.0)),
    "broken or faint strokes": _broken_or_faint,
}


def capture_family(family: str, digits: np.ndarray, seed: int) -> list:
    """Captures of each of ``digits`` (N, 28, 28) by ``family``, one seeded generator per family."""
    rng = np.random.default_rng([seed, sorted(FAMILIES).index(family)])
    return [FAMILIES[family](pixels, rng) for pixels in digits]


def sample_test_digits(test_set, count: int, seed: int):
    """``count`` test digits drawn at random from the whole test set (a slice would be easier or harder)."""
    order = np.random.default_rng(seed).choice(len(test_set.targets), count, replace=False)
    return test_set.data[order].numpy(), test_set.targets[order].numpy()


class PreparedFamily(NamedTuple):
    digits: np.ndarray  # (N, 28, 28) the source test digits
    labels: np.ndarray  # (N,)
    results: np.ndarray  # (N, 28, 28) what preprocess_image made of each capture
    ideals: np.ndarray  # (N, 28, 28) the ideal preprocessing of each capture (its source turned by its tilt)


@functools.lru_cache(maxsize=None)
def prepared_family(family: str, data_root: str, count: int = 150, seed: int = 11) -> PreparedFamily:
    """A family's captures of ``count`` random test digits, prepared once per process: the accuracy test
    and the model-free correlation test read the same captures (making them is most of their cost)."""
    from torch_mnist.data.mnist import load_mnist
    from torch_mnist.inference.digits import preprocess_image, to_mnist_canvas

    digits, labels = sample_test_digits(load_mnist(data_root, train=False), count, seed)
    captures = capture_family(family, digits, seed)
    return PreparedFamily(digits, labels, np.stack([preprocess_image(capture.data) for capture in captures]),
                          np.stack([to_mnist_canvas(capture.ideal) for capture in captures]))


def main() -> None:
    """Each family's accuracy with one or more checkpoints, as the docs report it (the last checkpoint also on
    the ideal preprocessing of the same captures), and the preprocessing's time:
    python tests/digit_images.py CKPT [CKPT ...]."""
    import argparse
    import os
    import time

    from torch_mnist import build_model, load_checkpoint
    from torch_mnist.training.checkpoint import checkpoint_normalization
    from torch_mnist.data.mnist import load_mnist
    from torch_mnist.inference.digits import preprocess_image, to_mnist_canvas
    from torch_mnist.training.epoch import predict_probabilities

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--count", type=int, default=1000, help="digits per family (default: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get("TORCH_MNIST_DATA", "data"))
    args = p.parse_args()
    models = []
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        models.append((build_model(checkpoint), checkpoint_normalization(checkpoint)))

    def accuracy(model, pixels) -> str:
        return f"{100 * (predict_probabilities(*model, pixels).argmax(1) == labels).mean():.1f}%"

    digits, labels = sample_test_digits(load_mnist(args.data_dir, train=False), args.count, args.seed)
    names = " | ".join(os.path.basename(path) for path in args.checkpoints)
    print(f"| family | {names} | {os.path.basename(args.checkpoints[-1])} on the ideal | median (95th pct) |")
    print("|---|" + "---|" * (len(models) + 2))
    print(f"| the same {args.count} test digits as tensors | "
          + " | ".join(accuracy(model, digits) for model in models) + " | | |")
    for family in FAMILIES:
        captures = capture_family(family, digits, args.seed)
        seconds, results = [], []
        for capture in captures:
            start = time.perf_counter()
            results.append(preprocess_image(capture.data))
            seconds.append(time.perf_counter() - start)
        pixels = np.stack(results)
        ideal = np.stack([to_mnist_canvas(capture.ideal) for capture in captures])
        times = f"{1000 * np.median(seconds):.1f} ms ({1000 * np.percentile(seconds, 95):.1f} ms)"
        print(f"| {family} | " + " | ".join(accuracy(model, pixels) for model in models)
              + f" | {accuracy(models[-1], ideal)} | {times} |", flush=True)


if __name__ == "__main__":
    main()
