"""MNIST digits saved the ways people save them: the image kinds the predict tests measure."""

import numpy as np
from PIL import Image, ImageFilter


def render_on_page(pixels: np.ndarray, path, size=224, canvas=(480, 360), offset=(30, 90), mode="L"):
    """An MNIST digit as a large black-on-white image with margins, off centre."""
    digit = Image.fromarray(255 - pixels).resize((size, size), Image.BILINEAR)
    page = Image.new("L", canvas, 255)
    page.paste(digit, offset)
    page.convert(mode).save(path)
    return path


def canvas_export(pixels: np.ndarray, side: int = 280) -> Image.Image:
    """What a browser canvas gives: black strokes whose alpha is the ink, on full transparency."""
    alpha = Image.fromarray(pixels).resize((side, side), Image.BILINEAR)
    return Image.merge("RGBA", (Image.new("L", alpha.size, 0),) * 3 + (alpha,))


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


KINDS = {
    "28x28 as saved from MNIST (light on dark)": lambda px: Image.fromarray(px),
    "28x28 inverted (dark on light)": lambda px: Image.fromarray(255 - px),
    "upscaled to 56 px": lambda px: Image.fromarray(px).resize((56, 56), Image.BILINEAR),
    "280 px canvas export, transparent background": canvas_export,
    "thin pen, 1 px, on 200 px": lambda px: thin_pen(px, 200, 1),
    "thin pen, 2 px, on 200 px": lambda px: thin_pen(px, 200, 2),
    "thin pen, 3 px, on 200 px": lambda px: thin_pen(px, 200, 3),
}
