"""The reporting commands: evaluate's detail, plot, and training's plot step."""

import contextlib
import io
import json
import sys

import pytest
from PIL import Image

from torch_mnist.commands.evaluate import main as evaluate_main
from torch_mnist.commands.plot import main as plot_main
from torch_mnist.commands.train import main as train_main

from conftest import assert_one_line_error_in_process, make_synthetic_root, run_in_process, run_script


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    root = make_synthetic_root(folder / "data")
    with contextlib.redirect_stdout(io.StringIO()):  # capsys is per test
        assert train_main(["--data-dir", str(root), "--epochs", "2", "--out", str(folder / "ckpt.pt"),
                           "--quiet"]) == 0
    return root, folder


class TestEvaluateDetail:
    def test_text_has_per_class_and_confusion(self, synthetic_run, capsys):
        root, folder = synthetic_run
        result = run_in_process(evaluate_main, ["--checkpoint", folder / "ckpt.pt", "--data-dir", root], capsys)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("loss: ") and lines[1].startswith("acc: ")
        assert "per-class accuracy:" in result.stdout and "confusion matrix" in result.stdout

    def test_json_and_misclassified_grid(self, synthetic_run, tmp_path, capsys):
        root, folder = synthetic_run
        grid = tmp_path / "grid.png"
        result = run_in_process(evaluate_main, ["--checkpoint", folder / "ckpt.pt", "--data-dir", root, "--json",
                                                "--misclassified", grid], capsys)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert sum(map(sum, report["confusion_matrix"])) == 200  # the synthetic test set
        history = json.loads((folder / "ckpt.json").read_text())["history"]
        assert report["accuracy"] == history["val_accuracy"][-1]
        assert set(report["per_class_accuracy"]) == {str(d) for d in range(10)}
        assert Image.open(grid).format == "PNG"

    def test_grid_into_missing_folder_is_refused_first(self, synthetic_run, tmp_path, capsys):
        root, folder = synthetic_run
        assert_one_line_error_in_process(evaluate_main, ["--checkpoint", folder / "ckpt.pt", "--data-dir", root,
                                                         "--misclassified", tmp_path / "nope" / "grid.png"],
                                         capsys, "does not exist")


class TestPlotsOfARun:
    def test_training_wrote_curves_and_confusion(self, synthetic_run):
        _, folder = synthetic_run
        for name in ("curves.png", "confusion.png"):
            assert Image.open(folder / name).format == "PNG"

    @pytest.mark.scripts
    def test_plot_script(self, synthetic_run, tmp_path):
        root, folder = synthetic_run
        result = run_script("plot", folder / "ckpt.json", "--data-dir", root, "--out-dir", tmp_path)
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "curves.png").size[0] >= 800
        assert Image.open(tmp_path / "confusion.png").format == "PNG"

    def test_plot_script_missing_json(self, tmp_path, capsys):
        assert_one_line_error_in_process(plot_main, [tmp_path / "none.json"], capsys, "no such file")

    def test_training_without_matplotlib_still_works(self, synthetic_run, tmp_path, capsys, monkeypatch):
        root, _ = synthetic_run
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
        result = run_in_process(train_main, ["--data-dir", root, "--epochs", 1, "--out", tmp_path / "c.pt",
                                             "--quiet"], capsys)
        assert result.returncode == 0, result.stderr
        assert "plots skipped: matplotlib is not installed; pip install -e '.[plot]'" in result.stdout
        assert (tmp_path / "c.pt").is_file() and not (tmp_path / "curves.png").exists()
