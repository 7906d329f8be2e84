"""Where the ink is in a captured digit: the paper's level and noise measured from the image itself.

One decision path for every capture, from a clean 28x28 PNG to a noisy, unevenly lit
JPEG of a blue ballpoint on grey paper:

1. the paper is a smooth surface per colour channel (a quadratic in x and y, which
   follows light falling off across a sheet), fitted robustly to the pixels that are
   not ink, and its noise is the median absolute deviation of what remains;
2. a pixel's ink is how far it stands out from that paper on the ink's side, along
   the ink's own colour (so a blue or red pen counts by its colour, every channel adding
   to the stroke);
3. ink is what stands out from the noise by a wide margin (seeds) and the softer
   pixels joined to it (hysteresis), so sensor noise and JPEG ringing stay paper;
4. the digit is the ink's main mass: small or distant components (specks, dust) go.

Every threshold is relative to the measured noise or to the ink's own contrast; the
paper under the result is exactly zero, as MNIST's is. numpy only, no torch.
"""

from typing import Optional, Tuple

import numpy as np

MAD_TO_SIGMA = 1.4826  # the median absolute deviation of Gaussian noise times this is its standard deviation
PAPER_SIGMAS = 3.0  # while fitting the paper, pixels further than this from it (in noise units) are ink
MIXED_SPREAD = 3.0  # a paper fit whose noise is 3x another start's has mixed ink into the paper ...
PAPER_SHARE = 0.3  # ... when that other start calls at least this share of the image paper
TWO_POPULATIONS = 3.8  # ink and paper: Otsu's two groups of levels this many within-spreads apart, or more
SEED_SIGMAS = 6.0  # ink seeds stand out by 6 noise sigmas: a false seed in ~1e9 paper pixels
EDGE_SIGMAS = 3.0  # a stroke's soft edge, joined to a seed, stands out by at least 3 sigmas
SEED_SHARE = 0.25  # ... and seeds carry a quarter of the strongest ink: JPEG ringing around strokes is weaker
EDGE_SHARE = 0.04  # the faintest edge kept, of the strongest ink: a lossy format's faint ringing on clean paper
MIN_SEEDS = 5  # pixels: fewer is a burst of noise (a JPEG's noise has heavier tails than a Gaussian), no stroke
MIN_CONTRAST = 16.0  # grey levels of 255: on noiseless paper, anything fainter than this is no digit
INK_COLOUR_SHARE = 0.01  # the ink's colour: the mean contrast of this share of the pixels, those standing out most
FIT_SAMPLES = 64  # the paper's surface is fitted on at most 64x64 samples (its shape is smooth)
SPECK_SHARE = 0.03  # a component with less ink than this fraction of the largest is a speck
OFF_SHEET = 0.15  # a dark region along more than this fraction of the image's edge ...
EDGE_HUGGING = 0.7  # ... whose contact is most of its own height plus width, is off the sheet
NEAR = 0.5  # ... and one further from the main digit than half its longer side is not part of it


def find_ink(pixels: np.ndarray) -> np.ndarray:
    """Ink (H, W) float32 in 0-255, bright on a zero background, from an image (H, W, C) of 0-255 values
    with C = 1 (grey) or 3 (colour). All zeros when nothing stands out from the paper."""
    pixels = pixels.astype(np.float32)
    terms = _surface_terms(*pixels.shape[:2])  # the same for every channel
    ink = _ink_on_paper(pixels, terms, from_the_border=False)
    if not ink.any() and _two_populations(pixels):
        # Nothing stands out from a paper fitted to the whole image, yet its levels are ink and paper: a digit
        # that fills its image (a crop to the ink, a thumbnail), whose paper is what lies along the border.
        ink = _ink_on_paper(pixels, terms, from_the_border=True)
    return ink


def _two_populations(pixels: np.ndarray) -> bool:
    """Whether an image's levels split in two groups further apart, in their own spread, than any one smooth
    group's halves are: Otsu's split of a normal noise leaves its halves 2.7 of their spread apart, of a
    uniform ramp of light 3.5; ink and paper stand further apart than that (measured: 4 and more)."""
    grey = pixels.mean(axis=-1)
    step = max(1, int(np.ceil(max(grey.shape) / FIT_SAMPLES)))
    levels = np.clip(grey[::step, ::step], 0, 255).ravel()
    threshold = _otsu_threshold(levels)
    dark, light = levels[levels <= threshold], levels[levels > threshold]
    if dark.size == 0 or light.size == 0:
        return False
    within = np.sqrt((dark.var() * dark.size + light.var() * light.size) / levels.size)
    return bool(light.mean() - dark.mean() > TWO_POPULATIONS * max(within, 1e-6))


def _ink_on_paper(pixels: np.ndarray, terms: np.ndarray, from_the_border: bool) -> np.ndarray:
    """:func:`find_ink` with the paper of :func:`_deviation_from_paper`."""
    deviations, paper_masks, sigmas = zip(*(_deviation_from_paper(pixels[..., c], terms, from_the_border)
                                            for c in range(pixels.shape[2])))
    deviation = np.stack(deviations, axis=-1)  # (H, W, C): pixel minus paper
    paper = np.logical_and.reduce(paper_masks)
    side = _ink_side(deviation.mean(axis=-1), float(np.mean(sigmas)))
    strength = _along_the_ink(side * deviation)
    level, sigma = _centre_and_spread(strength[paper] if paper.any() else strength.ravel())
    strength = strength - level  # the paper's own level of this signal (a max of channels is biased up)
    standing_out = strength[strength > max(SEED_SIGMAS * sigma, MIN_CONTRAST)]
    if standing_out.size == 0:
        return np.zeros(strength.shape, dtype=np.float32)
    contrast = float(np.percentile(standing_out, 90))  # the strokes' level, robust to one bright pixel
    seeds = strength > max(SEED_SIGMAS * sigma, SEED_SHARE * contrast, MIN_CONTRAST)
    edges = strength > max(EDGE_SIGMAS * sigma, EDGE_SHARE * contrast)
    labels, count = label_components(edges)
    seeded = np.bincount(labels[seeds], minlength=count + 1) >= MIN_SEEDS
    seeded[0] = False
    # The noise part of each value goes, so strokes fade to zero at their edges rather than step.
    ink = np.where(seeded[labels], np.clip(strength - EDGE_SIGMAS * sigma, 0, None), 0.0)
    ink = _main_mass(ink, labels, seeded)
    peak = ink.max()  # the darkest ink is MNIST's 255; a 28x28 MNIST digit keeps its own levels
    return (ink * (255.0 / peak) if peak > 0 else ink).astype(np.float32)


def _along_the_ink(contrast: np.ndarray) -> np.ndarray:
    """Each pixel's ink signal (H, W) from its contrast to the paper per channel (H, W, C), on the ink's side:
    for colour, the contrast along the ink's own colour (the mean contrast of the INK_COLOUR_SHARE of pixels
    that stand out most in any channel), so every channel adds to the stroke while each one's noise (a JPEG's
    coarse chroma, above all) averages out; a pen as light as its paper still counts by its colour."""
    strongest = contrast.max(axis=-1)
    if contrast.shape[-1] == 1:
        return strongest
    flat = strongest.ravel()
    cut = flat.size - max(1, int(flat.size * INK_COLOUR_SHARE))
    colour = contrast[strongest >= np.partition(flat, cut)[cut]].mean(axis=0)
    length = float(np.linalg.norm(colour))
    return contrast @ (colour / length).astype(np.float32) if length > 0 else strongest


def _surface_terms(height: int, width: int) -> np.ndarray:
    """The quadratic surface's terms (1, x, y, x², xy, y²) at every pixel, (H, W, 6), with x and y from -1
    to 1 across the image."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = 2 * ys / max(height - 1, 1) - 1, 2 * xs / max(width - 1, 1) - 1
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=-1)


def _deviation_from_paper(values: np.ndarray, terms: np.ndarray,
                          from_the_border: bool = False) -> Tuple[np.ndarray, np.ndarray, float]:
    """One channel minus its paper (a robustly fitted smooth surface of ``terms``), the mask of pixels that
    are paper, and the paper's noise (standard deviation, from the median absolute deviation).

    ``from_the_border``: the paper is the side of the image's levels that holds most of its border, whatever
    the fit to the whole image says (a digit that fills its image: a crop to the ink, a thumbnail)."""
    height, width = values.shape
    step = max(1, int(np.ceil(max(height, width) / FIT_SAMPLES)))
    samples = values[::step, ::step]
    sample_terms, sample_values = terms[::step, ::step].reshape(-1, 6), samples.ravel()
    # The paper is most of an image, so the fit starts from all of it; a tightly cropped digit can be half ink,
    # and a fit of such a mixture has a spread of the ink's contrast, not the paper's noise: then the fit that
    # starts from the side of Otsu's threshold that holds most of the border is the paper's.
    fits = [_robust_surface(sample_terms, sample_values, np.ones(sample_values.shape, dtype=bool))]
    # Neighbouring pixels differ by the noise alone but at the few stroke edges: a cheap check of the first fit
    # (along the sampled rows: thousands of pairs pin a spread down to a few percent).
    neighbours = _centre_and_spread(np.diff(values[::step], axis=1).ravel())[1] / np.sqrt(2) if width > 1 else 0.0
    border_side = _border_side(samples) \
        if from_the_border or fits[0][1] > MIXED_SPREAD * max(neighbours, 0.5) else None
    if border_side is not None:
        # ... and it stays on that side: a digit that spans its image leaves paper only along the edges, and
        # a surface free to grow from there would bend through the strokes (a quadratic across a tight crop
        # of a 1 is a valley as dark as the ink).
        side = border_side.ravel()
        if from_the_border:  # a digit that fills its image: the grey of its blurred edges is much of the side,
            side = side & _far_half(sample_values, side)  # and its far half from the ink is the paper
        fits.append(_robust_surface(sample_terms, sample_values, side, within=side))
        # Mixed: the first fit's spread is several times the paper's noise, and the border side's fit is
        # tighter. That side's spread still holds the grey of stroke edges, which make much of a tight crop:
        # its noise is the neighbours' then, where that is smaller.
        mixed = from_the_border or fits[0][1] > MIXED_SPREAD * max(fits[1][1], 0.5)
        if from_the_border:  # the paper's noise from its lighter half: stroke edges only ever darken it
            fits[1] = (fits[1][0], _upper_spread(sample_values - sample_terms[:, :3] @ fits[1][0], side),
                       fits[1][2])
        # A dark table at a sheet's corners is no paper either: the side it starts from must be a fair share
        # of the image. That share is the side's own (its fit's share can be far smaller on clean paper,
        # whose noise is so low that the grey of blurred stroke edges falls outside it).
        if not mixed or max(fits[1][2], float(border_side.mean())) < PAPER_SHARE:
            fits.pop()
    coefficients, sigma, _ = fits[-1]
    deviation = values - terms[..., :len(coefficients)] @ coefficients
    return deviation, np.abs(deviation) <= max(PAPER_SIGMAS * sigma, 0.5), sigma


def _upper_spread(residuals: np.ndarray, side: np.ndarray) -> float:
    """The noise of a paper whose darker values are mixed with grey stroke edges: the robust spread of the
    residuals above their median on ``side``, as a symmetric noise's half would have it."""
    values = residuals[side]
    centre = _median(values)
    upper = values[values >= centre] - centre
    return MAD_TO_SIGMA * _median(upper) if upper.size else 0.0


def _robust_surface(terms: np.ndarray, values: np.ndarray, keep: np.ndarray,
                    within: Optional[np.ndarray] = None) -> Tuple[np.ndarray, float, float]:
    """A quadratic surface fitted to ``values`` from the ``keep`` samples outward (never beyond the ``within``
    samples, if given): each round keeps those within 3 noise deviations of the majority; returns its
    coefficients, the paper's noise and the share of the samples it calls paper."""
    used = 3  # a plane first, then the quadratic from the paper it found
    for turn in range(6):
        coefficients = _least_squares(terms[keep, :used], values[keep])
        residual = values - terms[:, :used] @ coefficients
        centre, sigma = _centre_and_spread(residual[keep])
        kept, keep = keep, np.abs(residual - centre) <= max(PAPER_SIGMAS * sigma, 0.5)  # around the majority
        if within is not None:
            keep &= within
        if turn > 0 and np.array_equal(kept, keep):  # the next rounds would repeat this one exactly
            break
        used = 6 if within is None else 3  # paper only along the edges pins a plane down, not a quadratic
    return coefficients, _centre_and_spread(residual[keep])[1], float(keep.mean())


def _least_squares(terms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The coefficients that best fit ``values`` by ``terms`` (float32), through the normal equations in
    double precision: a 6x6 system instead of an SVD of thousands of rows (the terms, all within -1..1,
    are well conditioned); its own least squares where the terms are degenerate (an image one pixel wide)."""
    terms = terms.astype(np.float64)
    return np.linalg.lstsq(terms.T @ terms, terms.T @ values, rcond=None)[0].astype(np.float32)


def _far_half(values: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The half of ``side``'s values further from the other side's (lighter than its median, for a light side)."""
    median = _median(values[side])
    lighter = _median(values[~side]) < median if (~side).any() else True
    return values >= median if lighter else values <= median


def _border_side(samples: np.ndarray):
    """The samples on the side of Otsu's threshold that holds most of the image's border; None if one-sided."""
    levels = np.clip(samples, 0, 255)
    threshold = _otsu_threshold(levels)
    light = levels > threshold
    if light.all() or not light.any():
        return None
    border = np.concatenate([light[0], light[-1], light[1:-1, 0], light[1:-1, -1]])
    return light if border.mean() >= 0.5 else ~light


def _otsu_threshold(levels: np.ndarray) -> float:
    """The grey level that best splits ``levels`` in two classes (Otsu's method)."""
    histogram = np.bincount(levels.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    grey = np.arange(256)
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * grey)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    return float(np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2))


def _centre_and_spread(values: np.ndarray) -> Tuple[float, float]:
    """Median and robust standard deviation (MAD-based) of ``values``."""
    centre = _median(values)
    return centre, MAD_TO_SIGMA * _median(np.abs(values - centre))


def _median(values: np.ndarray) -> float:
    """``np.median`` of finite values, to the bit, in a fifth of its time: one selection, and for an even
    count the largest value below the upper middle (np.median's two-point selection is much slower)."""
    values = np.ravel(values)
    middle = values.size // 2
    if values.size == 0:
        return float("nan")
    selected = np.partition(values, middle)
    if values.size % 2:
        return float(selected[middle])
    return float(selected[:middle].max() + selected[middle]) / 2  # the sum rounded as np.median's mean rounds it


def _ink_side(deviation: np.ndarray, sigma: float) -> float:
    """-1 for ink darker than its paper (pen on paper), +1 for lighter (MNIST's own white on black): the side
    that carries more of what stands out beyond the noise."""
    margin = max(SEED_SIGMAS * sigma, 1.0)
    lighter = np.clip(deviation - margin, 0, None).sum()
    darker = np.clip(-deviation - margin, 0, None).sum()
    return 1.0 if lighter > darker else -1.0


def _main_mass(ink: np.ndarray, labels: np.ndarray, seeded: np.ndarray) -> np.ndarray:
    """Only the digit: the component with the most ink and those with a fair share of it near it."""
    mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=len(seeded))
    mass[~seeded] = 0
    ring = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    contact = np.bincount(ring, minlength=len(seeded))
    for component in np.nonzero(contact > OFF_SHEET * max(labels.shape))[0]:
        if component and _hugs_the_edge(labels == component, contact[component]):
            mass[component] = 0  # the table beyond a tilted sheet's edge, not ink
    if mass.max() <= 0:
        return ink
    main = int(np.argmax(mass))
    top, bottom, left, right = _box(labels == main)
    reach = NEAR * max(bottom - top, right - left)
    keep = np.zeros(len(mass), dtype=bool)
    for component in np.nonzero(mass >= SPECK_SHARE * mass[main])[0]:
        upper, lower, leftmost, rightmost = _box(labels == component)
        gap = max(upper - bottom, top - lower, leftmost - right, left - rightmost, 0)  # 0 where the boxes overlap
        keep[component] = gap <= reach
    return np.where(keep[labels], ink, 0.0)


def _hugs_the_edge(mask: np.ndarray, contact: int) -> bool:
    """Whether a region lies along the image's edge the way a table beside the sheet does: its edge contact
    spans most of its own extent (a corner triangle's two legs, a band's length). A digit cropped tightly
    touches the edge too, but along a stroke, a fraction of its height plus width."""
    top, bottom, left, right = _box(mask)
    return contact >= EDGE_HUGGING * ((bottom - top + 1) + (right - left + 1))


def _box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """Top, bottom, left, right (inclusive) of a non-empty mask."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def label_components(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """8-connected components of a boolean image: labels (0 for background, 1..count) and count.

    Works on runs of set pixels per row (a union-find over runs), so its cost grows with the number of
    runs, not of pixels: a digit's strokes are a few runs a row.
    """
    height, width = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    run_rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; runs come row by row, left to right, starts and ends paired
    parent = list(range(len(starts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(run_rows, np.arange(height + 1))  # runs of row r: first[r] .. first[r + 1]
    for row in range(1, height):
        above, above_end = first[row - 1], first[row]
        for run in range(first[row], first[row + 1]):
            while above < above_end and ends[above] < starts[run]:  # ends before this run's diagonal reach
                above += 1
            other = above
            while other < above_end and starts[other] <= ends[run]:  # starts within it (diagonals included)
                parent[root(other)] = root(run)
                other += 1
    roots = np.array([root(i) for i in range(len(starts))], dtype=np.int64)
    unique_roots, numbered = np.unique(roots, return_inverse=True) if len(roots) else (roots, roots)
    labels = np.zeros((height, width), dtype=np.int64)
    for run in range(len(starts)):
        labels[run_rows[run], starts[run]:ends[run]] = numbered[run] + 1
    return labels, len(unique_roots)
