import io
import os

from torch_mnist.training.progress import Progress, format_metrics

METRICS = {"loss": 0.0687, "accuracy": 0.97931, "val_loss": 0.0854, "val_accuracy": 0.9736}


def _epoch(mode):
    stream = io.StringIO()
    progress = Progress(mode, stream)
    progress.start_epoch(3, 20, 469)
    progress._last_refresh = 0.0  # as if the last redraw were long ago: the next show() draws
    progress.show(100, {"loss": 0.5, "accuracy": 0.9})
    progress.end_epoch(METRICS)
    return stream.getvalue()


class TestProgress:
    def test_keras_metric_format(self):
        assert format_metrics(METRICS) == "loss: 0.0687 - accuracy: 0.9793 - val_loss: 0.0854 - val_accuracy: 0.9736"

    def test_log_file_gets_whole_lines(self):
        text = _epoch("lines")
        assert "\r" not in text
        lines = text.splitlines()
        assert lines[0] == "Epoch 3/20"
        assert lines[1].startswith("469/469 [==============================] - ")
        assert lines[1].endswith("ms/step - " + format_metrics(METRICS))

    def test_terminal_bar_redraws_with_running_means_then_prints_the_summary(self):
        text = _epoch("bar")
        assert "100/469 [" in text and "- loss: 0.5000 - accuracy: 0.9000" in text
        assert text.rstrip("\n").split("\r")[-1].endswith(format_metrics(METRICS))

    def test_quiet_prints_nothing(self):
        assert _epoch("quiet") == ""

    def test_a_terminal_that_reports_no_size_still_shows_the_bar(self, monkeypatch):
        # script -qc and some CI terminals report 0 rows x 0 columns; tqdm would trim and hide everything.
        monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((0, 0)))
        stream = io.StringIO()
        progress = Progress("bar", stream)
        progress.start_epoch(1, 1, 469)
        assert (progress._bar.ncols, progress._bar.nrows) == (120, 24)
        progress._last_refresh = 0.0
        progress.show(100, {"loss": 0.5})
        assert "100/469 [" in stream.getvalue()
