"""Own-digit prediction: preprocessing like MNIST's, and the rendered-digit accuracy test."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from torch_mnist import TrainConfig, UserError, load_checkpoint, run_training
from torch_mnist.data import load_mnist
from torch_mnist.predict import predict_files, preprocess_image, to_mnist_canvas

from torch_mnist.commands.predict import main as predict_main

from conftest import assert_one_line_error_in_process, run_in_process, run_script


def _render(pixels: np.ndarray, path, size=224, canvas=(480, 360), offset=(30, 90), mode="L"):
    """An MNIST digit as a large black-on-white image with margins, off centre."""
    digit = Image.fromarray(255 - pixels).resize((size, size), Image.BILINEAR)
    page = Image.new("L", canvas, 255)
    page.paste(digit, offset)
    page.convert(mode).save(path)
    return path


class TestPreprocessing:
    def test_canvas_is_centred_by_mass_and_20px(self):
        ink = np.zeros((100, 60), dtype=np.float32)
        ink[10:90, 20:40] = 255  # an 80x20 bar
        canvas = to_mnist_canvas(ink)
        rows, cols = np.nonzero(canvas)
        assert canvas.shape == (28, 28) and canvas.dtype == np.uint8
        assert rows.max() - rows.min() + 1 == 20  # the longer side is 20 px
        ys, xs = np.indices(canvas.shape)
        mass = canvas.astype(float).sum()
        assert abs((ys * canvas).sum() / mass - 14) <= 1 and abs((xs * canvas).sum() / mass - 14) <= 1

    @pytest.mark.parametrize("mode, suffix", [("L", "png"), ("RGB", "jpg"), ("L", "bmp"), ("P", "gif")])
    def test_light_background_is_inverted_in_every_format(self, tmp_path, mode, suffix):
        page = Image.new("L", (200, 150), 250)
        page.paste(Image.new("L", (20, 100), 10), (90, 25))  # a dark vertical stroke
        path = tmp_path / f"one.{suffix}"
        page.convert(mode).save(path)
        canvas = preprocess_image(path)
        assert canvas.max() > 200 and canvas[0, 0] == 0  # white ink on black, like MNIST

    def test_noisy_uneven_paper_is_not_ink(self, tmp_path):
        rng = np.random.default_rng(0)
        paper = np.linspace(170, 245, 300)[None, :] * np.ones((200, 1)) + rng.normal(0, 8, (200, 300))
        paper[50:150, 140:155] = 40  # one stroke
        Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).save(tmp_path / "photo.jpg")
        canvas = preprocess_image(tmp_path / "photo.jpg")
        rows, cols = np.nonzero(canvas > 64)
        assert rows.max() - rows.min() + 1 >= 19 and cols.max() - cols.min() + 1 <= 8  # just the stroke

    @pytest.mark.parametrize("make, message", [
        (lambda p: Image.new("L", (64, 64), 255).save(p), "blank image"),
        (lambda p: p.write_text("not an image"), "not a readable image"),
        (lambda p: None, "no such file"),
    ])
    def test_unusable_images(self, tmp_path, make, message):
        path = tmp_path / "x.png"
        make(path)
        with pytest.raises(UserError, match=message):
            preprocess_image(path)


@pytest.fixture(scope="module")
def trained(real_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "ckpt.pt"
    run_training(TrainConfig(epochs=2), real_root, torch.device("cpu"), out)
    return out


@pytest.mark.slow
class TestOnRealDigits:
    def test_rendered_test_digits_are_predicted_at_95_percent(self, trained, real_root, tmp_path):
        from torch_mnist import build_model
        from torch_mnist.checkpoint import checkpoint_normalization

        checkpoint = load_checkpoint(trained)
        test = load_mnist(real_root, train=False)
        rng = np.random.default_rng(1)
        paths, labels = [], []
        for i in range(200):
            offset = (int(rng.integers(5, 250)), int(rng.integers(5, 130)))
            mode = ("L", "RGB")[i % 2]
            paths.append(_render(test.data[i].numpy(), tmp_path / f"{i}.{('png', 'jpg')[i % 2]}",
                                 offset=offset, mode=mode))
            labels.append(int(test.targets[i]))
        results = predict_files(build_model(checkpoint), paths, checkpoint_normalization(checkpoint))
        accuracy = np.mean([r.prediction == label for r, label in zip(results, labels)])
        assert accuracy >= 0.95, accuracy

    @pytest.mark.scripts
    def test_script_reports_each_image_and_fails_for_the_bad_one(self, trained, real_root, tmp_path):
        test = load_mnist(real_root, train=False)
        good = _render(test.data[0].numpy(), tmp_path / "seven.png")  # test image 0 is a 7
        blank = tmp_path / "blank.png"
        Image.new("L", (50, 50), 255).save(blank)
        shown = tmp_path / "seen.png"
        result = run_script("predict", "--checkpoint", trained, good, blank, "--json", "--show-input", shown)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {blank}: blank image: no ink found"
        answers = json.loads(result.stdout)
        assert answers[0]["path"] == str(good) and answers[0]["prediction"] == 7
        assert [digit for digit, _ in answers[0]["top3"]][0] == 7 and len(answers[0]["top3"]) == 3
        assert answers[1]["error"].endswith("blank image: no ink found") and answers[1]["prediction"] is None
        assert Image.open(shown).size == (28, 28)

    def test_text_output(self, trained, real_root, tmp_path, capsys):
        test = load_mnist(real_root, train=False)
        good = _render(test.data[1].numpy(), tmp_path / "two.png")  # test image 1 is a 2
        result = run_in_process(predict_main, ["--checkpoint", trained, good], capsys)
        assert result.returncode == 0 and result.stdout.startswith(f"{good}: 2  (top 3: 2: ")


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert_one_line_error_in_process(predict_main, ["--checkpoint", tmp_path / "none.pt", tmp_path / "x.png"],
                                     capsys, "no such checkpoint file")
