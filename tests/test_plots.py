import sys

import numpy as np
import pytest
from PIL import Image

from torch_mnist import UserError
from torch_mnist.data import CLASS_NAMES
from torch_mnist.plots import INSTALL_HINT, plot_confusion, plot_curves, plot_seed_band
from torch_mnist.reference import reference_history

pytest.importorskip("matplotlib")


def _is_png(path, min_width=400, min_height=250):
    image = Image.open(path)
    return image.format == "PNG" and image.size[0] >= min_width and image.size[1] >= min_height


class TestPlots:
    def test_curves(self, tmp_path):
        history = {key: [v if v is not None else 0.09 for v in values]
                   for key, values in reference_history().items()}
        plot_curves(history, tmp_path / "curves.png")
        assert _is_png(tmp_path / "curves.png", 800)

    def test_confusion(self, tmp_path):
        plot_confusion(np.eye(10, dtype=int) * 98 + 1, CLASS_NAMES, tmp_path / "confusion.png")
        assert _is_png(tmp_path / "confusion.png")

    def test_seed_band(self, tmp_path):
        summary = {key: {"mean": [0.5 + 0.01 * i for i in range(20)], "std": [0.01] * 20}
                   for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        plot_seed_band(summary, tmp_path / "seeds.png")
        assert _is_png(tmp_path / "seeds.png", 1000)

    def test_without_matplotlib_says_how_to_install(self, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
        with pytest.raises(UserError, match="pip install -e '.\\[plot\\]'") as error:
            plot_curves(reference_history(), tmp_path / "curves.png")
        assert str(error.value) == INSTALL_HINT and not (tmp_path / "curves.png").exists()
