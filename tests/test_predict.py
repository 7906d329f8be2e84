"""Own-digit prediction: preprocessing like MNIST's, and the rendered-digit accuracy test."""

import json
from functools import partial

import numpy as np
import pytest
from PIL import Image

from torch_mnist import load_checkpoint
from torch_mnist.commands.predict import main as predict_main
from torch_mnist.data import load_mnist
from torch_mnist.engine import predict_probabilities
from torch_mnist.predict import predict_files

from conftest import assert_one_line_error_in_process, run_in_process
from digit_images import KINDS, render_on_page


def _probabilities(checkpoint):
    from torch_mnist import build_model
    from torch_mnist.checkpoint import checkpoint_normalization
    return partial(predict_probabilities, build_model(checkpoint), checkpoint_normalization(checkpoint))


@pytest.fixture
def trained(trained_checkpoint):
    return trained_checkpoint


@pytest.mark.slow
class TestOnRealDigits:
    def test_rendered_test_digits_are_predicted_at_95_percent(self, trained, real_root, tmp_path):
        checkpoint = load_checkpoint(trained)
        test = load_mnist(real_root, train=False)
        rng = np.random.default_rng(1)
        paths, labels = [], []
        for i in range(200):
            offset = (int(rng.integers(5, 250)), int(rng.integers(5, 130)))
            mode = ("L", "RGB")[i % 2]
            paths.append(render_on_page(test.data[i].numpy(), tmp_path / f"{i}.{('png', 'jpg')[i % 2]}",
                                 offset=offset, mode=mode))
            labels.append(int(test.targets[i]))
        results = predict_files(paths, _probabilities(checkpoint))
        accuracy = np.mean([r.prediction == label for r, label in zip(results, labels)])
        assert accuracy >= 0.95, accuracy

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_digits_saved_every_usual_way_are_read_like_the_test_set(self, trained, real_root, tmp_path, kind):
        # The 2-epoch model reads the test tensors at ~97%; each kind of saved image must stay close
        # (100 digits: at most 5 mistakes).
        checkpoint = load_checkpoint(trained)
        test = load_mnist(real_root, train=False)
        paths = []
        for i in range(100):
            KINDS[kind](test.data[i].numpy()).save(tmp_path / f"{i}.png")
            paths.append(tmp_path / f"{i}.png")
        results = predict_files(paths, _probabilities(checkpoint))
        accuracy = np.mean([r.prediction == int(label) for r, label in zip(results, test.targets[:100])])
        assert accuracy >= 0.95, (kind, accuracy)

    def test_script_reports_each_image_and_fails_for_the_bad_one(self, trained, real_root, tmp_path, capsys):
        test = load_mnist(real_root, train=False)
        good = render_on_page(test.data[0].numpy(), tmp_path / "seven.png")  # test image 0 is a 7
        blank = tmp_path / "blank.png"
        Image.new("L", (50, 50), 255).save(blank)
        shown = tmp_path / "seen.png"
        result = run_in_process(predict_main, ["--checkpoint", trained, good, blank, "--json", "--show-input", shown],
                                capsys)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {blank}: blank image: no ink found"
        answers = json.loads(result.stdout)
        assert answers[0]["path"] == str(good) and answers[0]["prediction"] == 7
        assert [digit for digit, _ in answers[0]["top3"]][0] == 7 and len(answers[0]["top3"]) == 3
        assert answers[1]["error"].endswith("blank image: no ink found") and answers[1]["prediction"] is None
        strip = Image.open(shown)
        assert strip.size == (2 * (112 + 8), 112 + 28)  # both images, the unreadable one crossed out

    def test_text_output(self, trained, real_root, tmp_path, capsys):
        test = load_mnist(real_root, train=False)
        good = render_on_page(test.data[1].numpy(), tmp_path / "two.png")  # test image 1 is a 2
        result = run_in_process(predict_main, ["--checkpoint", trained, good], capsys)
        assert result.returncode == 0 and result.stdout.startswith(f"{good}: 2  (top 3: 2: ")


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert_one_line_error_in_process(predict_main, ["--checkpoint", tmp_path / "none.pt", tmp_path / "x.png"],
                                     capsys, "no such checkpoint file")
