"""--log-csv and --tensorboard, read back with the csv module and TensorBoard's own event reader."""

import csv
import json
import shutil
import sys

import pytest

from torch_mnist.commands.train import main as train_main
from torch_mnist.training.logs import CSV_HEADER

from conftest import assert_one_line_error_in_process, run_in_process

STEPS = 5  # the synthetic set: 600 images in batches of 128


def _train(capsys, root, out, *flags):
    result = run_in_process(train_main, ["--data-dir", root, "--out", out, "--quiet", "--no-plots", *flags], capsys)
    assert result.returncode == 0, result.stderr
    return json.loads(out.with_suffix(".json").read_text())["history"]


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


class TestCsv:
    def test_rows_in_keras_format_equal_the_history(self, synthetic_root, tmp_path, capsys):
        history = _train(capsys, synthetic_root, tmp_path / "c.pt", "--epochs", 2, "--log-csv", tmp_path / "log.csv")
        header, rows = _rows(tmp_path / "log.csv")
        assert header == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"] == CSV_HEADER
        assert [row[0] for row in rows] == ["0", "1"]  # Keras counts epochs from 0
        for i, row in enumerate(rows):
            assert [float(value) for value in row[1:]] == [history[key][i] for key in header[1:]]

    def test_a_resumed_run_appends_each_epoch_once(self, synthetic_root, tmp_path, capsys):
        log = tmp_path / "log.csv"
        one_go = _train(capsys, synthetic_root, tmp_path / "one.pt", "--epochs", 3)
        _train(capsys, synthetic_root, tmp_path / "c.pt", "--epochs", 1, "--log-csv", log)
        shutil.copy(tmp_path / "c.pt", tmp_path / "epoch1.pt")
        _train(capsys, synthetic_root, tmp_path / "c.pt", "--resume", tmp_path / "c.pt", "--epochs", 2,
               "--log-csv", log)
        # As after a crash whose checkpoint lags the log: resuming from epoch 1 re-runs epoch 2.
        _train(capsys, synthetic_root, tmp_path / "epoch1.pt", "--resume", tmp_path / "epoch1.pt", "--epochs", 3,
               "--log-csv", log)
        _, rows = _rows(log)
        assert [row[0] for row in rows] == ["0", "1", "2"]
        assert [float(row[2]) for row in rows] == one_go["loss"]

    def test_a_csv_of_another_run_is_refused_on_resume(self, synthetic_root, tmp_path, capsys):
        _train(capsys, synthetic_root, tmp_path / "c.pt", "--epochs", 1)
        log = tmp_path / "other.csv"
        log.write_text("epoch,acc,loss\n0,0.5,1.0\n")
        before = (tmp_path / "c.pt").read_bytes()
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--resume", tmp_path / "c.pt",
                                                      "--epochs", 2, "--log-csv", log], capsys,
                                         "its columns ['epoch', 'acc', 'loss'] are not this run's")
        assert log.read_text() == "epoch,acc,loss\n0,0.5,1.0\n" and (tmp_path / "c.pt").read_bytes() == before

    def test_a_new_run_never_writes_into_an_existing_log(self, synthetic_root, tmp_path, capsys):
        log = tmp_path / "log.csv"
        _train(capsys, synthetic_root, tmp_path / "a.pt", "--epochs", 1, "--log-csv", log)
        before = log.read_bytes()
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "b.pt",
                                                      "--log-csv", log], capsys, "already holds another run's log")
        assert log.read_bytes() == before and not (tmp_path / "b.pt").exists()

    def test_an_unwritable_log_is_refused_before_training(self, synthetic_root, tmp_path, capsys):
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt",
                                                      "--log-csv", "/proc/log.csv"], capsys,
                                         "--log-csv /proc/log.csv: cannot be written")
        assert not (tmp_path / "c.pt").exists()


class TestTensorBoard:
    @staticmethod
    def _events(folder):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        return events

    def test_scalars_config_and_graph_read_back(self, synthetic_root, tmp_path, capsys):
        pytest.importorskip("tensorboard")
        history = _train(capsys, synthetic_root, tmp_path / "c.pt", "--epochs", 2, "--tensorboard", tmp_path / "tb",
                         "--tensorboard-every", 2)
        events = self._events(tmp_path / "tb")
        for key in history:
            scalars = events.Scalars(f"epoch/{key}")
            assert [s.step for s in scalars] == [STEPS, 2 * STEPS]
            assert [s.value for s in scalars] == pytest.approx(history[key], rel=1e-6)  # stored as float32
        assert [s.value for s in events.Scalars("epoch/learning_rate")] == pytest.approx([1e-3, 1e-3])
        assert all(s.value > 0 for s in events.Scalars("epoch/seconds"))
        assert [s.step for s in events.Scalars("step/loss")] == [1, 3, 5, 6, 8, 10]  # every 2nd step
        assert '"hidden": [' in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert events.Graph() is not None

    def test_a_resumed_run_continues_the_same_steps(self, synthetic_root, tmp_path, capsys):
        pytest.importorskip("tensorboard")
        one_go = _train(capsys, synthetic_root, tmp_path / "one.pt", "--epochs", 2)
        _train(capsys, synthetic_root, tmp_path / "c.pt", "--epochs", 1, "--tensorboard", tmp_path / "tb")
        _train(capsys, synthetic_root, tmp_path / "c.pt", "--resume", tmp_path / "c.pt", "--epochs", 2,
               "--tensorboard", tmp_path / "tb")
        events = self._events(tmp_path / "tb")
        scalars = events.Scalars("epoch/val_loss")
        assert [s.step for s in scalars] == [STEPS, 2 * STEPS]
        assert [s.value for s in scalars] == pytest.approx(one_go["val_loss"], rel=1e-6)

    def test_without_tensorboard_one_line_says_how_to_get_it(self, synthetic_root, tmp_path, capsys, monkeypatch):
        monkeypatch.setitem(sys.modules, "tensorboard", None)
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt",
                                                      "--tensorboard", tmp_path / "tb"], capsys,
                                         "TensorBoard is not installed; pip install -e '.[tensorboard]'")
        assert not (tmp_path / "c.pt").exists()
