"""Training digits distorted on the fly, as Simard, Steinkraus and Platt (ICDAR 2003) trained their MLPs.

Each training image is redrawn every epoch through up to three distortions, each
with its own random strength per image:

- ``affine``: a turn, a scale, a shear and a shift about the image's centre (the ranges below);
- ``elastic``: Simard's field, uniform noise in [-1, 1] per pixel and axis smoothed by a
  Gaussian of ``ELASTIC_SIGMA`` px, scaled by up to ``ELASTIC_ALPHA`` px;
- ``pen``: the strokes made thicker on 30% of the images (up to two 3x3 grey-level dilations, a
  marker's width) and thinner (an erosion) on a tenth, each by a random share.

It all runs batched on the training device: the pen's dilated and eroded digits are made
once per run, and each batch's sampling grid (both maps) is one compiled graph, sampled by
``grid_sample``'s own kernel. The random numbers come from a generator the caller seeds for
each epoch, so a resumed run, and each rank under torchrun, sees the same digits again.
"""

import functools
import math
import warnings
from typing import Callable, Iterator, Set, Tuple

import torch
import torch.nn.functional as F

from ..distributed import Shard
from ..errors import Note, one_line, quiet_cuda_probe
from ..interrupts import signals_kept
from .batches import Batch, InMemoryBatches, TensorSplit

SIDE = 28
DISTORTIONS = ("affine", "elastic", "pen")  # the names a configuration may list

MAX_TURN_DEGREES = 15.0
SCALE_RANGE = (0.85, 1.15)  # the digit's size, the same along both axes
MAX_SHEAR = 0.3  # x moves by up to 0.3 px per px of y
MAX_SHIFT = 2.5  # px, along each axis
ELASTIC_SIGMA = 4.0  # px: Simard's smoothing (his best MLP field: sigma 4, alpha 34)
ELASTIC_ALPHA = 34.0  # px: the field's largest scale; each image draws its own in [0, alpha]
THICKER_SHARE, THINNER_SHARE = 0.3, 0.1  # of the images, their pen made thicker or thinner ...
# ... by this share of a full erosion, or of a full dilation and, past 1, of a second one on top of it
# (a marker's pen: up to two dilations took the thick-marker captures from 91.9% to 94.1%, the rest within
# a seed's spread)
THICKER_AMOUNT, THINNER_AMOUNT = (0.5, 2.0), (0.3, 0.6)
# The smoothing's modes weaker than this share of the strongest are left out of the field: what they would
# add is under 1% of its size (a Gaussian of 4 px over 28 keeps 8 of its 28 modes).
ELASTIC_MODE_TOLERANCE = 1e-2
UNIFORMS = 8  # random numbers per image: pen choice and amount, turn, scale, shear, shift x and y, field scale


def pen_variants(images: torch.Tensor, chunk: int = 8192) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each flattened image (N, 784) with its strokes dilated once and twice (3x3, then 5x5) and eroded
    once, made once: max-pooling every batch again would cost more than the rest of the distortions together."""
    thicker, thickest, thinner = torch.empty_like(images), torch.empty_like(images), torch.empty_like(images)
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].view(-1, 1, SIDE, SIDE)
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        thicker[start:start + chunk] = dilated.flatten(1)
        thickest[start:start + chunk] = F.max_pool2d(dilated, 3, stride=1, padding=1).flatten(1)
        thinner[start:start + chunk] = (-F.max_pool2d(-x, 3, stride=1, padding=1)).flatten(1)
    return thicker, thickest, thinner


@functools.lru_cache(maxsize=None)
def elastic_basis(device: torch.device) -> torch.Tensor:
    """(28, k): the 1-d Gaussian smoothing matrix G's strongest modes, each scaled by its strength.

    Smoothed noise G U G^T (U of independent entries) equals Q L (Q^T U Q) L Q^T, and Q^T U Q has uncorrelated
    entries of U's variance again (Q orthonormal): so the field is drawn as B W B^T, with W a k x k matrix of
    uniform numbers in [-1, 1] (the same covariance), instead of 784 of them and two 28 x 28 products per image
    and axis."""
    offsets = torch.arange(SIDE, dtype=torch.float64)
    distance = offsets[:, None] - offsets[None, :]
    smoothing = torch.exp(-distance ** 2 / (2 * ELASTIC_SIGMA ** 2)) / (math.sqrt(2 * math.pi) * ELASTIC_SIGMA)
    strengths, modes = torch.linalg.eigh(smoothing)
    keep = strengths > ELASTIC_MODE_TOLERANCE * strengths.max()
    return (modes[:, keep] * strengths[keep]).to(torch.float32).to(device)


@functools.lru_cache(maxsize=None)
def _centred_pixels(device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every pixel's x and y from the image's centre, row by row: two (1, 784) tensors."""
    ys, xs = torch.meshgrid(torch.arange(SIDE, dtype=torch.float32), torch.arange(SIDE, dtype=torch.float32),
                            indexing="ij")
    centre = (SIDE - 1) / 2
    return (xs.reshape(1, -1) - centre).to(device), (ys.reshape(1, -1) - centre).to(device)


def _span(u: torch.Tensor, bounds: Tuple[float, float]) -> torch.Tensor:
    return bounds[0] + u * (bounds[1] - bounds[0])


def elastic_field(noise: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Smoothed noise fields (B, 2, 784), px before scaling, from ``noise`` (B, 2, k, k) of variance 1/3 and
    :func:`elastic_basis`: B W B^T per image and axis. Written as multiplies and sums over k (~8), which
    Inductor fuses into its loops, where a library call on such thin matrices costs more than the sum."""
    smoothed = (noise[:, :, :, None, :] * basis[None, None, None, :, :]).sum(-1)  # (B, 2, k, 28): W B^T
    field = (basis[None, None, :, :, None] * smoothed[:, :, None, :, :]).sum(-2)  # (B, 2, 28, 28)
    return field.reshape(noise.shape[0], 2, SIDE * SIDE)


def _distortion_graph(images, thicker, thickest, thinner, rows, randoms, basis, xs, ys, *, pen: bool, affine: bool,
                      elastic: bool, background: float):
    """The ``rows`` of ``images`` after the pen change, their paper at 0, and the grid each output pixel
    reads them at (grid_sample's coordinates): one graph for torch.compile, the rows' gathers fused into its
    loops. Shapes: images (N, 784), rows (B,), randoms (B, UNIFORMS + 2 k^2) uniform in [0, 1)."""
    count = rows.shape[0]
    u = randoms[:, :UNIFORMS].unbind(1)
    x = images[rows] - background  # the paper at 0, where grid_sample pads
    if pen:  # a dilation commutes with the normalization's shift: the variants' paper is at background too
        thick, thin = u[0] < THICKER_SHARE, u[0] >= 1 - THINNER_SHARE
        amount = torch.where(thick, _span(u[1], THICKER_AMOUNT), _span(u[1], THINNER_AMOUNT))[:, None]
        # beyond one full dilation (an amount over 1) the pen goes on from it towards the second one
        twice = amount > 1
        start = torch.where(twice, thicker[rows] - background, x)
        target = torch.where(thick[:, None], torch.where(twice, thickest[rows], thicker[rows]),
                             torch.where(thin[:, None], thinner[rows], x + background))
        x = start + (amount - twice.float()) * (target - background - start)
    centre = (SIDE - 1) / 2
    source_x, source_y = xs + centre, ys + centre  # (1, 784), each output pixel reads its own place
    if affine:
        turn = _span(u[2], (-math.radians(MAX_TURN_DEGREES), math.radians(MAX_TURN_DEGREES)))[:, None]
        scale, shear = _span(u[3], SCALE_RANGE)[:, None], _span(u[4], (-MAX_SHEAR, MAX_SHEAR))[:, None]
        cos, sin = torch.cos(turn) / scale, torch.sin(turn) / scale
        # (turn) @ (shear) / scale, from the output pixel to where it reads, plus the shift
        source_x = cos * xs + (cos * shear - sin) * ys + centre + _span(u[5], (-MAX_SHIFT, MAX_SHIFT))[:, None]
        source_y = sin * xs + (sin * shear + cos) * ys + centre + _span(u[6], (-MAX_SHIFT, MAX_SHIFT))[:, None]
    if elastic:
        k = basis.shape[1]
        noise = (randoms[:, UNIFORMS:] * 2 - 1).view(count, 2, k, k)  # uniform in [-1, 1), as Simard's
        field = elastic_field(noise, basis) * _span(u[7], (0.0, ELASTIC_ALPHA))[:, None, None]
        source_x, source_y = source_x + field[:, 0], source_y + field[:, 1]
    to_grid = 2.0 / SIDE  # pixel centres at (2i + 1) / 28 - 1 (align_corners=False)
    grid = torch.stack([(source_x + 0.5) * to_grid - 1.0, (source_y + 0.5) * to_grid - 1.0], dim=-1)
    return x, grid.expand(count, SIDE * SIDE, 2).reshape(count, SIDE, SIDE, 2)


def compiled(graph: Callable) -> Callable:
    """``graph`` through torch.compile: one static graph per batch shape (a full batch and a ragged last)."""
    return torch.compile(graph, fullgraph=True, dynamic=False)


class Distorter:
    """Distorted copies of rows of ``images`` (N, 784), a split whose paper is ``background`` (0 for x / 255).

    The pen's dilated and eroded images are made here, once. ``compile``: each batch's work but the sampling
    itself as one torch.compile graph (an eager fallback, with a note, where it cannot be built); the
    sampling is ``grid_sample``'s own kernel, several times quicker than a compiled one."""

    def __init__(self, images: torch.Tensor, kinds, background: float = 0.0, compile: bool = True):
        unknown = [kind for kind in kinds if kind not in DISTORTIONS]
        if unknown:
            raise ValueError(f"unknown distortions {unknown}; choose from {DISTORTIONS}")
        self.images, self.kinds, self.background = images, tuple(kinds), float(background)
        self.thicker, self.thickest, self.thinner = pen_variants(images) if "pen" in kinds else (images,) * 3
        self.geometric = "affine" in kinds or "elastic" in kinds
        self.randoms = UNIFORMS + (2 * elastic_basis(images.device).shape[1] ** 2 if "elastic" in kinds else 0)
        graph = functools.partial(_distortion_graph, pen="pen" in kinds, affine="affine" in kinds,
                                  elastic="elastic" in kinds, background=self.background)
        self._eager_graph: Callable = graph
        self._graph: Callable = compiled(graph) if compile and kinds else graph
        self._compiled_counts: Set[int] = set()  # the batch sizes compiled so far

    def __call__(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The ``rows`` (indices on the images' device) distorted, (len(rows), 784), with randoms drawn from
        ``generator`` (a generator of that device), the same for the same generator state."""
        if not self.kinds:
            return self.images.index_select(0, rows)
        device = self.images.device
        randoms = torch.rand((rows.shape[0], self.randoms), generator=generator, device=device)
        arguments = (self.images, self.thicker, self.thickest, self.thinner, rows, randoms, elastic_basis(device),
                     *_centred_pixels(device))
        x, grid = self._run(arguments)
        if self.geometric:
            x = F.grid_sample(x.view(-1, 1, SIDE, SIDE), grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        x = x.reshape(rows.shape[0], SIDE * SIDE)
        return x + self.background if self.background else x

    def _run(self, arguments: tuple):
        if self._graph is self._eager_graph:
            return self._graph(*arguments)
        count = arguments[3].shape[0]
        if count in self._compiled_counts:  # a Ctrl-C swallowed by a guard is delivered again after the call
            with signals_kept():
                return self._graph(*arguments)
        with signals_kept() as kept:  # compiling takes seconds: a Ctrl-C acts at once, and is never lost
            try:
                with quiet_cuda_probe():
                    result = self._graph(*arguments)
            except Exception as e:  # torch.compile raises many types; nothing has run yet
                if kept.interrupted:
                    raise  # an interruption that torch turned into an error: delivered as itself on the way out
                warnings.warn(f"the distortions cannot be compiled here ({one_line(e)}); drawing them eagerly, "
                              "which is slower", Note, stacklevel=3)
                self._graph = self._eager_graph
                return self._graph(*arguments)
        self._compiled_counts.add(count)
        return result


def distortion_seed(seed: int, epoch: int, rank: int) -> int:
    """The distortions' seed for one epoch of one rank: a stream apart from the shuffling and the weights."""
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729 + 0x5EED) % (2 ** 63)


class DistortedBatches:
    """Shuffled training batches of a :class:`TensorSplit`, each image redrawn through a :class:`Distorter`
    of the split's images.

    Batches the same images in the same order as :class:`InMemoryBatches` with the same ``generator``;
    call :meth:`start_epoch` with a seed (:func:`distortion_seed`) before each epoch.
    """

    def __init__(self, split: TensorSplit, batch_size: int, generator: torch.Generator, distorter: Distorter,
                 shard: Shard = Shard()):
        if distorter.images is not split.images:
            raise ValueError("the distorter must be made from this split's images")
        self.batches = InMemoryBatches(split, batch_size, generator, shard)
        self.distorter, self.labels = distorter, split.labels
        self.num_samples = self.batches.num_samples
        self.generator = torch.Generator(device=split.images.device)

    def __len__(self) -> int:
        return len(self.batches)

    def start_epoch(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[Batch]:
        for rows in self.batches.index_batches():
            yield self.distorter(rows, self.generator), self.labels.index_select(0, rows)


def distortion_examples(images: torch.Tensor, kinds, seed: int = 0) -> torch.Tensor:
    """``images`` (N, 784, paper at 0) distorted once, eagerly: for looking at what training sees."""
    rows = torch.arange(len(images), device=images.device)
    return Distorter(images, kinds, compile=False)(rows, torch.Generator(device=images.device).manual_seed(seed))
