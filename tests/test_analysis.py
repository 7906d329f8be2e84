import numpy as np
import torch
from PIL import Image

from torch_mnist.reports.analysis import confusion_matrix, format_confusion, misclassified_grid, per_class_accuracy
from torch_mnist.data.registry import CLASS_NAMES


class TestConfusion:
    def test_counts_land_in_true_row_predicted_column(self):
        true = torch.tensor([0, 0, 1, 2, 2, 2])
        predicted = torch.tensor([0, 1, 1, 2, 2, 0])
        matrix = confusion_matrix(predicted, true, num_classes=3)
        assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
        assert per_class_accuracy(matrix) == [0.5, 1.0, 2 / 3]

    def test_text_has_every_class(self):
        matrix = np.eye(10, dtype=np.int64) * 7
        text = format_confusion(matrix, CLASS_NAMES)
        assert "per-class accuracy:" in text and text.count("1.0000  (7 images)") == 10
        assert text.splitlines()[-1].split() == ["9"] + ["0"] * 9 + ["7"]


class TestMisclassifiedGrid:
    def test_grid_holds_only_the_mistakes(self, tmp_path):
        pixels = np.random.default_rng(0).integers(0, 255, (30, 28, 28), dtype=np.uint8)
        true = torch.arange(30) % 10
        predicted = true.clone()
        predicted[[3, 17, 25]] = 0
        count = misclassified_grid(pixels, true, predicted, tmp_path / "grid.png", columns=10)
        image = Image.open(tmp_path / "grid.png")
        assert count == 3 and image.format == "PNG" and image.size == (560, 68)
