import math

import numpy as np
import pytest
import torch

from torch_mnist import TrainConfig, UserError, load_checkpoint, run_training
from torch_mnist.config import DISTORTIONS as CONFIG_DISTORTIONS, learning_rate
from torch_mnist.data import distort
from torch_mnist.data.batches import InMemoryBatches, TensorSplit
from torch_mnist.data.distort import (DISTORTIONS, DistortedBatches, Distorter, distortion_seed, elastic_basis,
                                      elastic_field, pen_variants)
from torch_mnist.training.run import resume_config

CPU = torch.device("cpu")


def _digits(count: int, seed: int = 0) -> torch.Tensor:
    """Bars and boxes of ink (1.0) on paper (0.0), (count, 784): a shape whose ink is easy to follow."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), dtype=np.float32)
    for image in images:
        top, left = rng.integers(4, 10, 2)
        image[top:top + int(rng.integers(8, 14)), left:left + int(rng.integers(2, 4))] = 1.0
        image[top:top + 2, left:left + int(rng.integers(6, 12))] = 1.0
    return torch.from_numpy(images.reshape(count, 784))


def _distort(kinds, images, seed=0, background=0.0, compile=False):
    rows = torch.arange(len(images))
    return Distorter(images, kinds, background, compile=compile)(rows, torch.Generator().manual_seed(seed))


class TestDistorter:
    def test_the_config_and_the_module_name_the_same_distortions(self):
        assert CONFIG_DISTORTIONS == DISTORTIONS

    def test_no_distortion_leaves_the_images_as_they_are(self):
        images = _digits(8)
        assert torch.equal(_distort((), images), images)

    @pytest.mark.parametrize("kinds", [("affine",), ("elastic",), ("pen",), DISTORTIONS])
    def test_each_kind_changes_every_image_reproducibly_and_keeps_the_ink(self, kinds):
        images = _digits(64)
        first, again, other = _distort(kinds, images, 1), _distort(kinds, images, 1), _distort(kinds, images, 2)
        assert torch.equal(first, again) and not torch.equal(first, other)
        assert first.shape == images.shape and (first.min() >= -1e-6) and (first.max() <= 1 + 1e-6)
        changed = (first - images).abs().amax(dim=1) > 1e-3
        assert changed.float().mean() >= (0.25 if kinds == ("pen",) else 0.95)  # the pen changes 30% of them
        ink_ratio = first.sum(dim=1) / images.sum(dim=1)  # the digit stays on the canvas, about as heavy
        # ... or up to a marker's: two dilations widen these 2-3 px bars to 6-7 px, and a scale of 1.15 the area
        heaviest = 4.0 * (distort.SCALE_RANGE[1] ** 2 if "affine" in kinds else 1.0) if "pen" in kinds else 3.0
        assert ink_ratio.min() > 0.3 and ink_ratio.max() < heaviest, ink_ratio

    def test_the_paper_of_any_normalization_stays_paper(self):
        images = _digits(16)
        background = -0.4242  # standardize: (0 - mean) / std
        shifted = _distort(DISTORTIONS, images * 3.2 + background, 3, background)
        plain = _distort(DISTORTIONS, images, 3)
        assert torch.allclose(shifted, plain * 3.2 + background, atol=1e-4)

    def test_the_affine_maps_stay_in_their_documented_ranges(self):
        # One bright pixel next to the centre (13.5, 13.5) moves by the inverse map of its shift and its half
        # pixel from the centre: at most |M^-1| (MAX_SHIFT * sqrt(2) + sqrt(0.5)), |M^-1| <= the largest
        # scale times the shear's largest stretch.
        images = torch.zeros(200, 784)
        images[:, 14 * 28 + 14] = 1.0
        moved = _distort(("affine",), images, 5).view(200, 28, 28)
        ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        mass = moved.sum(dim=(1, 2)).clamp_min(1e-6)
        centre_x, centre_y = (moved * xs).sum(dim=(1, 2)) / mass, (moved * ys).sum(dim=(1, 2)) / mass
        offset = torch.hypot(centre_x - 14, centre_y - 14)
        shear = distort.MAX_SHEAR
        stretch = distort.SCALE_RANGE[1] * (shear + math.sqrt(shear ** 2 + 4)) / 2  # shear's largest singular value
        bound = stretch * (distort.MAX_SHIFT * math.sqrt(2) + math.sqrt(0.5))
        assert offset.max() <= bound and offset.max() >= 0.5 * distort.MAX_SHIFT, (offset.max(), bound)

    @pytest.mark.compile
    def test_the_compiled_graph_distorts_as_the_eager_one(self):
        images = _digits(128)
        eager, compiled = (_distort(DISTORTIONS, images, 4, compile=flag) for flag in (False, True))
        assert torch.allclose(eager, compiled, atol=1e-4)


class TestElasticField:
    def test_its_spread_is_simards_smoothed_uniform_noise(self):
        # Simard's field G U G^T (U uniform in [-1, 1] per pixel, G a Gaussian of sigma 4 px) drawn directly,
        # against ours through the Gaussian's strongest modes: the same spread at every pixel.
        generator = torch.Generator().manual_seed(0)
        k = elastic_basis(CPU).shape[1]
        uniform = torch.rand((4000, 2, k, k), generator=generator) * 2 - 1  # as the distortions draw it
        ours = elastic_field(uniform, elastic_basis(CPU))  # (N, 2, 784), before scaling
        offsets = torch.arange(28, dtype=torch.float64)
        sigma = distort.ELASTIC_SIGMA
        smoothing = torch.exp(-(offsets[:, None] - offsets[None, :]) ** 2 / (2 * sigma ** 2)) / (
            math.sqrt(2 * math.pi) * sigma)
        noise = torch.rand((4000, 28, 28), generator=generator, dtype=torch.float64) * 2 - 1
        simard = (smoothing @ noise @ smoothing.T).reshape(4000, 784)
        ratio = ours[:, 0].double().std(dim=0) / simard.std(dim=0)
        assert ratio.min() > 0.9 and ratio.max() < 1.1, (ratio.min(), ratio.max())

    def test_the_basis_keeps_a_few_modes(self):
        assert 4 <= elastic_basis(CPU).shape[1] <= 12


class TestPen:
    def test_variants_are_one_and_two_dilations_and_an_erosion(self):
        images = _digits(8)
        thicker, thickest, thinner = pen_variants(images, chunk=3)
        assert (thickest >= thicker).all() and (thicker >= images).all() and (thinner <= images).all()
        assert thicker.sum() > 1.5 * images.sum() and thinner.sum() < 0.8 * images.sum()
        assert thickest.sum() > 1.3 * thicker.sum()
        square = torch.zeros(1, 784)
        square.view(28, 28)[13, 13] = 1.0  # one dot: a 3x3 square, then a 5x5 one
        dot_thicker, dot_thickest, _ = pen_variants(square)
        assert dot_thicker.sum() == 9 and dot_thickest.sum() == 25

    def test_the_amount_runs_from_the_digit_through_one_dilation_to_two(self, monkeypatch):
        images = _digits(64)
        thicker, thickest, _ = pen_variants(images)
        monkeypatch.setattr(distort, "THICKER_SHARE", 1.0)  # every image drawn with the thicker pen
        ink = []
        for amount in (0.5, 1.0, 1.5, 2.0):
            monkeypatch.setattr(distort, "THICKER_AMOUNT", (amount, amount))
            ink.append(float(_distort(("pen",), images).sum()))
        assert ink[1] == pytest.approx(float(thicker.sum()), rel=1e-5)
        assert ink[3] == pytest.approx(float(thickest.sum()), rel=1e-5)
        halfway = [(images.sum() + thicker.sum()) / 2, (thicker.sum() + thickest.sum()) / 2]
        assert ink[0] == pytest.approx(float(halfway[0]), rel=1e-5)
        assert ink[2] == pytest.approx(float(halfway[1]), rel=1e-5)


class TestDistortedBatches:
    def test_same_batches_as_in_memory_and_the_same_digits_for_the_same_seed(self):
        split = TensorSplit(_digits(300), torch.arange(300) % 10)
        plain = InMemoryBatches(split, 64, torch.Generator().manual_seed(0))
        distorted = DistortedBatches(split, 64, torch.Generator().manual_seed(0), Distorter(split.images, DISTORTIONS))
        distorted.start_epoch(7)
        first = list(distorted)
        assert [labels.tolist() for _, labels in first] == [labels.tolist() for _, labels in plain]
        again = DistortedBatches(split, 64, torch.Generator().manual_seed(0), Distorter(split.images, DISTORTIONS))
        again.start_epoch(7)
        assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again))
        assert len(distorted) == len(plain) == 5

    def test_a_distorter_of_other_images_is_refused(self):
        split = TensorSplit(_digits(10), torch.arange(10))
        with pytest.raises(ValueError, match="this split's images"):
            DistortedBatches(split, 4, torch.Generator(), Distorter(_digits(10), DISTORTIONS))

    def test_seeds_differ_by_epoch_and_rank(self):
        seeds = {distortion_seed(0, epoch, rank) for epoch in range(1, 50) for rank in range(4)}
        assert len(seeds) == 49 * 4


class TestConfig:
    def test_names_and_loader_are_checked(self):
        with pytest.raises(UserError, match="--distort takes distinct names"):
            TrainConfig(distort=("affine", "swirl")).validate()
        with pytest.raises(UserError, match="--distort takes distinct names"):
            TrainConfig(distort=("affine", "affine")).validate()
        with pytest.raises(UserError, match="--loader memory"):
            TrainConfig(distort=("affine",), loader="dataloader").validate()
        with pytest.raises(UserError, match="--lr-schedule must be one of constant, cosine"):
            TrainConfig(lr_schedule="step").validate()

    def test_round_trip_through_a_dict(self):
        config = TrainConfig(distort=["elastic", "pen"], lr_schedule="cosine").validate()
        values = config.to_dict()
        assert values["distort"] == ["elastic", "pen"]
        assert TrainConfig.from_dict(values) == config

    def test_cosine_learning_rate(self):
        config = TrainConfig(epochs=4, lr=0.01, lr_schedule="cosine")
        rates = [learning_rate(config, epoch) for epoch in range(1, 5)]
        assert rates[0] == 0.01 and rates == sorted(rates, reverse=True)
        assert rates[2] == pytest.approx(0.005) and rates[3] == pytest.approx(0.01 * (1 + math.cos(0.75 * math.pi)) / 2)
        assert learning_rate(TrainConfig(epochs=4, lr=0.01), 3) == 0.01


class TestDistortedRuns:
    def test_resumed_run_equals_one_go_bit_for_bit(self, synthetic_root, tmp_path):
        options = dict(distort=DISTORTIONS, lr_schedule="cosine")
        one_go = run_training(TrainConfig(epochs=3, **options), synthetic_root, CPU, tmp_path / "one.pt")
        run_training(TrainConfig(epochs=1, **options), synthetic_root, CPU, tmp_path / "split.pt")
        checkpoint = load_checkpoint(tmp_path / "split.pt")
        resumed = run_training(resume_config(checkpoint, 3), synthetic_root, CPU, tmp_path / "split.pt",
                               resume=checkpoint)
        assert resumed.history == one_go.history
        plain = run_training(TrainConfig(epochs=3), synthetic_root, CPU, tmp_path / "plain.pt")
        assert plain.history["loss"] != one_go.history["loss"]  # the distortions were used
        saved = load_checkpoint(tmp_path / "one.pt")
        assert saved["config"]["distort"] == list(DISTORTIONS) and saved["config"]["lr_schedule"] == "cosine"
