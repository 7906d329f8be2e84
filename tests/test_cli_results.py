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

from conftest import assert_one_line_error_in_process, make_synthetic_root, run_in_process


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
    def test_training_wrote_pictures_named_after_its_checkpoint(self, synthetic_run):
        _, folder = synthetic_run
        for name in ("ckpt.curves.png", "ckpt.confusion.png"):
            assert Image.open(folder / name).format == "PNG"

    def test_two_runs_in_one_folder_keep_their_own_pictures(self, synthetic_run, tmp_path, capsys):
        root, _ = synthetic_run
        for name in ("a", "b"):
            result = run_in_process(train_main, ["--data-dir", root, "--epochs", 1, "--quiet", "--out",
                                                 tmp_path / f"{name}.pt"], capsys)
            assert f"plots: {tmp_path / name}.curves.png, {tmp_path / name}.confusion.png" in result.stdout
        assert {p.name for p in tmp_path.glob("*.png")} == {"a.curves.png", "a.confusion.png",
                                                            "b.curves.png", "b.confusion.png"}

    def test_plot_script(self, synthetic_run, tmp_path, capsys):
        root, folder = synthetic_run
        out_dir = tmp_path / "new" / "folder"  # created for us
        result = run_in_process(plot_main, [folder / "ckpt.json", "--data-dir", root, "--out-dir", out_dir], capsys)
        assert result.returncode == 0, result.stderr
        assert Image.open(out_dir / "ckpt.curves.png").size[0] >= 800
        assert Image.open(out_dir / "ckpt.confusion.png").format == "PNG"

    def test_curves_need_only_the_json(self, synthetic_run, tmp_path, capsys):
        _, folder = synthetic_run
        (tmp_path / "lonely.json").write_bytes((folder / "ckpt.json").read_bytes())  # no lonely.pt beside it
        result = run_in_process(plot_main, [tmp_path / "lonely.json"], capsys)
        assert result.returncode == 0
        assert result.stdout.strip() == f"curves: {tmp_path / 'lonely.curves.png'}"
        assert result.stderr.strip() == f"note: no confusion matrix: {tmp_path / 'lonely.pt'}: no such checkpoint file"
        assert Image.open(tmp_path / "lonely.curves.png").format == "PNG"
        assert not (tmp_path / "lonely.confusion.png").exists()

    @pytest.mark.parametrize("content, message", [
        (None, "no such file"),
        (b"\x89PNG not json", "not a JSON history"),
        (b'{"epochs": 3}', "JSON without a run's history"),
    ])
    def test_plot_script_refuses_what_is_not_a_history(self, tmp_path, capsys, content, message):
        path = tmp_path / "run.json"
        if content is not None:
            path.write_bytes(content)
        assert_one_line_error_in_process(plot_main, [path], capsys, str(path), message)
        assert list(tmp_path.glob("*.png")) == []

    def test_training_without_matplotlib_still_works(self, synthetic_run, tmp_path, capsys, monkeypatch):
        root, _ = synthetic_run
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
        result = run_in_process(train_main, ["--data-dir", root, "--epochs", 1, "--out", tmp_path / "c.pt",
                                             "--quiet"], capsys)
        assert result.returncode == 0, result.stderr
        assert "plots skipped: matplotlib is not installed; pip install -e '.[plot]'" in result.stdout
        assert (tmp_path / "c.pt").is_file() and not list(tmp_path.glob("*.png"))
