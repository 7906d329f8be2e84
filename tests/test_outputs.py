"""No command destroys what it was given: every output checked against every input and against the other
outputs (after resolving links) before any work, an existing file replaced only by its own kind; and the
data files as special files (a directory, a FIFO, a link to a device) are one line each."""

import json
import os

import pytest

from torch_mnist.commands.evaluate import main as evaluate_main
from torch_mnist.commands.export import main as export_main
from torch_mnist.commands.plot import main as plot_main
from torch_mnist.commands.predict import main as predict_main
from torch_mnist.commands.reproduce import main as reproduce_main
from torch_mnist.commands.train import main as train_main

from conftest import assert_one_line_error_in_process, run_in_process


@pytest.fixture
def run(synthetic_root, tmp_path, capsys):
    """A one-epoch checkpoint of the synthetic data, and its folder's files as they were."""
    out = tmp_path / "k.pt"
    result = run_in_process(train_main, ["--epochs", "1", "--hidden", "16", "--data-dir", synthetic_root,
                                         "--out", out, "--quiet", "--no-plots"], capsys)
    assert result.returncode == 0, result
    return out


def _snapshot(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(capsys, main, args, folder, *fragments):
    """One error line, exit 2, and every file under ``folder`` exactly as before (nothing new either)."""
    before = _snapshot(folder)
    assert_one_line_error_in_process(main, args, capsys, *fragments)
    assert _snapshot(folder) == before


class TestTrain:
    def test_out_as_its_own_history(self, synthetic_root, tmp_path, capsys):
        _refused(capsys, train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out", tmp_path / "run.json"],
                 tmp_path, "the history beside --out", "is the same file as --out")

    @pytest.mark.parametrize("log", ["b.json", "b.pt", "b.curves.png"])
    def test_the_csv_log_on_another_output(self, synthetic_root, tmp_path, capsys, log):
        _refused(capsys, train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out", tmp_path / "b.pt",
                                      "--log-csv", tmp_path / log], tmp_path, "--log-csv", "is the same file as")

    def test_a_derived_history_that_is_someone_elses_file(self, synthetic_root, tmp_path, capsys):
        (tmp_path / "precious.json").write_text('{"my": "notes"}')
        _refused(capsys, train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out",
                                      tmp_path / "precious.txt"], tmp_path,
                 "precious.json exists and is not a run's JSON history")

    def test_an_out_that_is_not_a_checkpoint(self, synthetic_root, tmp_path, capsys):
        (tmp_path / "notes.pt").write_text("my notes")
        _refused(capsys, train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out", tmp_path / "notes.pt"],
                 tmp_path, "--out", "exists and is not a checkpoint")

    def test_an_out_on_a_data_file(self, synthetic_root, tmp_path, capsys):
        labels = synthetic_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
        os.symlink(labels, tmp_path / "link.pt")
        _refused(capsys, train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out", tmp_path / "link.pt"],
                 synthetic_root, "is the same file as the input the data file t10k-labels-idx1-ubyte")

    def test_an_earlier_checkpoint_is_still_replaced_by_a_new_run(self, run, synthetic_root, capsys):
        result = run_in_process(train_main, ["--epochs", "1", "--hidden", "8", "--data-dir", synthetic_root,
                                             "--out", run, "--quiet", "--no-plots"], capsys)
        assert result.returncode == 0, result  # the documented behaviour: a checkpoint by a checkpoint


class TestResultCommands:
    def test_export_over_its_checkpoint(self, run, capsys):
        _refused(capsys, export_main, ["--checkpoint", run, "--out", run], run.parent,
                 "--out", "is the same file as the input --checkpoint")

    @pytest.mark.parametrize("target", ["k.pt", "k.json", "raw"])
    def test_evaluate_misclassified_over_an_input(self, run, synthetic_root, capsys, target):
        grid = (synthetic_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte") if target == "raw" else run.parent / target
        _refused(capsys, evaluate_main, ["--checkpoint", run, "--data-dir", synthetic_root, "--misclassified", grid],
                 run.parent, "--misclassified", "is the same file as the input")

    def test_evaluate_misclassified_over_a_hard_link_of_the_checkpoint(self, run, synthetic_root, capsys):
        os.link(run, run.parent / "other-name.png")
        _refused(capsys, evaluate_main, ["--checkpoint", run, "--data-dir", synthetic_root, "--misclassified",
                                         run.parent / "other-name.png"], run.parent, "is the same file as the input")

    @pytest.mark.parametrize("target", ["image", "checkpoint"])
    def test_predict_show_input_over_an_input(self, run, tmp_path, capsys, target):
        from PIL import Image
        image = tmp_path / "img.png"
        Image.new("L", (40, 40), 255).save(image)
        shown = image if target == "image" else run
        _refused(capsys, predict_main, ["--checkpoint", run, image, "--show-input", shown], tmp_path,
                 "--show-input", "is the same file as the input")

    def test_plot_refuses_lists_of_different_lengths(self, tmp_path, capsys):
        history = {"loss": [0.3, 0.2], "accuracy": [0.9], "val_loss": [0.3, 0.2], "val_accuracy": [0.9, 0.95]}
        (tmp_path / "mismatch.json").write_text(json.dumps({"history": history}))
        _refused(capsys, plot_main, [tmp_path / "mismatch.json"], tmp_path, "one figure per epoch each")

    def test_reproduce_never_replaces_earlier_seed_runs(self, run, synthetic_root, tmp_path, capsys):
        folder = tmp_path / "seeds"
        folder.mkdir()
        (folder / "seed0.pt").write_bytes(run.read_bytes())
        _refused(capsys, reproduce_main, ["--seeds", "2", "--epochs", "1", "--data-dir", synthetic_root,
                                          "--out-dir", folder], folder, "already holds seed0.pt")


class TestSpecialDataFiles:
    @pytest.mark.parametrize("kind", ["directory", "fifo", "device link"])
    def test_a_test_file_that_is_not_a_regular_file_is_one_line(self, synthetic_root, tmp_path, capsys, kind):
        labels = synthetic_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
        labels.unlink()
        if kind == "directory":
            labels.mkdir()
        elif kind == "fifo":
            os.mkfifo(labels)
        else:
            os.symlink("/dev/zero", labels)
        assert_one_line_error_in_process(train_main, ["--epochs", "1", "--data-dir", synthetic_root, "--out",
                                                      tmp_path / "c.pt", "--quiet"], capsys, "t10k-labels-idx1-ubyte",
                                         "not a file")
        assert not (tmp_path / "c.pt").exists()

    def test_evaluate_needs_no_training_files(self, run, synthetic_root, capsys):
        images = synthetic_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
        images.unlink()
        images.mkdir()
        result = run_in_process(evaluate_main, ["--checkpoint", run, "--data-dir", synthetic_root, "--json"], capsys)
        assert result.returncode == 0, result
        assert 0 <= json.loads(result.stdout)["accuracy"] <= 1
