"""evaluate.py's detail, plot.py, and training's plot step, run as users run them."""

import json
import os

import pytest
from PIL import Image

from conftest import assert_one_line_error, run_script


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    from conftest import make_synthetic_root
    folder = tmp_path_factory.mktemp("run")
    root = make_synthetic_root(folder / "data")
    result = run_script("train", "--data-dir", root, "--epochs", 2, "--out", folder / "ckpt.pt", "--quiet")
    assert result.returncode == 0, result.stderr
    return root, folder


class TestEvaluateDetail:
    def test_text_has_per_class_and_confusion(self, synthetic_run):
        root, folder = synthetic_run
        result = run_script("evaluate", "--checkpoint", folder / "ckpt.pt", "--data-dir", root)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("loss: ") and lines[1].startswith("acc: ")
        assert "per-class accuracy:" in result.stdout and "confusion matrix" in result.stdout

    def test_json_and_misclassified_grid(self, synthetic_run, tmp_path):
        root, folder = synthetic_run
        grid = tmp_path / "grid.png"
        result = run_script("evaluate", "--checkpoint", folder / "ckpt.pt", "--data-dir", root, "--json",
                            "--misclassified", grid)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert sum(map(sum, report["confusion_matrix"])) == 200  # the synthetic test set
        history = json.loads((folder / "ckpt.json").read_text())["history"]
        assert report["accuracy"] == history["val_accuracy"][-1]
        assert set(report["per_class_accuracy"]) == {str(d) for d in range(10)}
        assert Image.open(grid).format == "PNG"

    def test_grid_into_missing_folder_is_refused_first(self, synthetic_run, tmp_path):
        root, folder = synthetic_run
        result = run_script("evaluate", "--checkpoint", folder / "ckpt.pt", "--data-dir", root,
                            "--misclassified", tmp_path / "nope" / "grid.png")
        assert_one_line_error(result, "does not exist")


class TestPlotsOfARun:
    def test_training_wrote_curves_and_confusion(self, synthetic_run):
        _, folder = synthetic_run
        for name in ("curves.png", "confusion.png"):
            assert Image.open(folder / name).format == "PNG"

    def test_plot_script(self, synthetic_run, tmp_path):
        root, folder = synthetic_run
        result = run_script("plot", folder / "ckpt.json", "--data-dir", root, "--out-dir", tmp_path)
        assert result.returncode == 0, result.stderr
        assert Image.open(tmp_path / "curves.png").size[0] >= 800
        assert Image.open(tmp_path / "confusion.png").format == "PNG"

    def test_plot_script_missing_json(self, tmp_path):
        assert_one_line_error(run_script("plot", tmp_path / "none.json"), "no such file")

    def test_training_without_matplotlib_still_works(self, synthetic_run, tmp_path):
        root, _ = synthetic_run
        hide = tmp_path / "hide"
        hide.mkdir()
        (hide / "matplotlib.py").write_text("raise ImportError('hidden for this test')\n")
        env = {**os.environ, "PYTHONPATH": str(hide)}
        result = run_script("train", "--data-dir", root, "--epochs", 1, "--out", tmp_path / "c.pt", "--quiet",
                            env=env)
        assert result.returncode == 0, result.stderr
        assert "plots skipped: matplotlib is not installed; pip install -e '.[plot]'" in result.stdout
        assert (tmp_path / "c.pt").is_file() and not (tmp_path / "curves.png").exists()
