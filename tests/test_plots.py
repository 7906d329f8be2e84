import sys

import numpy as np
import pytest
from PIL import Image

from torch_mnist import UserError
from torch_mnist.data.registry import CLASS_NAMES
from torch_mnist.reports import plots
from torch_mnist.reports.plots import INSTALL_HINT, plot_confusion, plot_curves, plot_seed_band, plots_paths
from torch_mnist.reports.reference import reference_history

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

    def test_every_point_is_on_the_chart_with_whole_epoch_ticks(self, tmp_path, monkeypatch):
        drawn = []
        monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
        one_epoch = {"loss": [0.258], "accuracy": [0.926], "val_loss": [0.1445], "val_accuracy": [0.9546]}
        plot_curves(one_epoch, tmp_path / "curves.png")
        loss_axis, accuracy_axis = drawn[0].axes
        low, high = accuracy_axis.get_ylim()
        assert low < 0.8802 and high > 0.9998  # the reference's epoch 1 and our training point both show
        accuracy_axis.figure.canvas.draw()
        ticks = [tick for tick in loss_axis.get_xticks() if loss_axis.get_xlim()[0] <= tick <= 20]
        assert ticks and all(float(tick).is_integer() for tick in ticks)

    def test_only_mnist_runs_are_drawn_beside_the_mnist_reference(self, tmp_path, monkeypatch):
        drawn = []
        monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.append(figure))
        history = {"loss": [0.5, 0.4], "accuracy": [0.8, 0.85], "val_loss": [0.45, 0.42], "val_accuracy": [0.83, 0.84]}
        plot_curves(history, tmp_path / "curves.png", with_reference=False)
        assert all("reference" not in line.get_label() for axis in drawn[0].axes for line in axis.get_lines())

    def test_pictures_are_named_after_their_run(self, tmp_path):
        assert plots_paths(tmp_path / "run.pt") == (tmp_path / "run.curves.png", tmp_path / "run.confusion.png")
        assert plots_paths(tmp_path / "run.json", tmp_path / "out") == (tmp_path / "out" / "run.curves.png",
                                                                         tmp_path / "out" / "run.confusion.png")

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
