"""Cases of the second hostile probe that are about the commands themselves: a full standard output, an
unusable torch cache, a reader that leaves, outputs named after folders or nothing, SIGTERM to the server."""

import io
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from torch_mnist import TrainConfig, run_training
from torch_mnist.commands.common import run_main
from torch_mnist.commands.evaluate import main as evaluate_main
from torch_mnist.commands.export import main as export_main
from torch_mnist.commands.plot import main as plot_main
from torch_mnist.commands.predict import main as predict_main
from torch_mnist.training.progress import Progress

from conftest import REPO, assert_one_line_error_in_process

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import make_synthetic_root
    folder = tmp_path_factory.mktemp("probe")
    root = make_synthetic_root(folder / "data")
    run_training(TrainConfig(epochs=1, compile=False), root, CPU, folder / "tiny.pt")
    return folder / "tiny.pt", root


def _digit_file(path):
    page = np.full((60, 60), 255, np.uint8)
    page[10:50, 25:33] = 0
    Image.fromarray(page).save(path)
    return path


class TestStandardOutput:
    @pytest.mark.scripts
    @pytest.mark.parametrize("command", ["evaluate", "predict"])
    def test_a_full_standard_output_is_one_line(self, tiny, tmp_path, command):
        checkpoint, root = tiny
        args = ["--checkpoint", checkpoint] + (["--data-dir", root, "--json"] if command == "evaluate" else
                                               [_digit_file(tmp_path / "d.png")])
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, REPO / "scripts" / f"{command}.py", *map(str, args)],
                                    stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == ["error: the output could not be written (No space left on "
                                                      "device)"]

    def test_a_reader_that_leaves_does_not_stop_the_run(self):
        class Gone(io.StringIO):
            def write(self, text):
                raise BrokenPipeError(32, "Broken pipe")

        progress = Progress("lines", Gone())
        progress.start_epoch(1, 2, 10)  # nothing raised: the run goes on, quietly
        progress.end_epoch({"loss": 0.5, "accuracy": 0.9})
        assert progress.mode == "quiet"


class TestTorchCache:
    @pytest.mark.scripts
    @pytest.mark.parametrize("kind", ["a file", "a read-only folder"])
    def test_an_unusable_inductor_cache_is_a_note(self, tiny, tmp_path, kind):
        if kind == "a read-only folder" and os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        cache = tmp_path / "cache"
        if kind == "a file":
            cache.write_text("not a folder")
        else:
            cache.mkdir()
            cache.chmod(0o500)
        checkpoint, root = tiny
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--checkpoint",
                                 str(checkpoint), "--data-dir", str(root)], capture_output=True, text=True,
                                timeout=300, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)})
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"note: TORCHINDUCTOR_CACHE_DIR {cache} {'is not a folder' if kind == 'a file' else 'is not writable'}: "
            "torch.compile caches in a temporary folder for this run (compiling from scratch)"]
        assert "acc:" in result.stdout

    def test_the_note_in_process(self, tiny, tmp_path, capsys, monkeypatch):
        (tmp_path / "cache").write_text("x")
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
        checkpoint, root = tiny
        assert run_main(evaluate_main, ["--checkpoint", str(checkpoint), "--data-dir", str(root)]) == 0
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] != str(tmp_path / "cache")
        assert capsys.readouterr().err.startswith("note: TORCHINDUCTOR_CACHE_DIR")


class TestOutputNames:
    def test_show_input_of_nothing(self, tiny, tmp_path, capsys):
        assert_one_line_error_in_process(predict_main, ["--checkpoint", tiny[0], _digit_file(tmp_path / "d.png"),
                                                        "--show-input", ""], capsys,
                                         "--show-input needs a file path such as seen.png")

    def test_show_input_of_a_folder_suggests_a_png(self, tiny, tmp_path, capsys):
        assert_one_line_error_in_process(predict_main, ["--checkpoint", tiny[0], _digit_file(tmp_path / "d.png"),
                                                        "--show-input", tmp_path], capsys,
                                         f"give a file path such as {tmp_path / 'seen.png'}")

    def test_export_to_a_folder_suggests_an_onnx_file(self, tiny, tmp_path, capsys):
        assert_one_line_error_in_process(export_main, ["--checkpoint", tiny[0], "--out", tmp_path], capsys,
                                         f"give a file path such as {tmp_path / 'model.onnx'}")

    def test_export_does_not_replace_a_text_file(self, tiny, tmp_path, capsys):
        (tmp_path / "notes.txt").write_text("mine")
        assert_one_line_error_in_process(export_main, ["--checkpoint", tiny[0], "--out", tmp_path / "notes.txt"],
                                         capsys, "is not an ONNX model")
        assert (tmp_path / "notes.txt").read_text() == "mine"

    def test_plots_beside_a_history_in_a_read_only_folder_name_no_flag_not_given(self, tiny, tmp_path, capsys,
                                                                                 monkeypatch):
        import json
        history = tmp_path / "ck.json"
        history.write_text(json.dumps({"history": {k: [0.5] for k in ("loss", "accuracy", "val_loss",
                                                                          "val_accuracy")}}))
        from torch_mnist.commands import common

        def not_writable(path, flag="--out", example="ckpt.pt"):
            from torch_mnist.errors import UserError
            raise UserError(f"{flag} {path}: folder {path.parent} is not writable (Permission denied)")
        monkeypatch.setattr(common, "check_output_path", not_writable)
        assert_one_line_error_in_process(plot_main, [history], capsys, f"the curves beside {history}:")


@pytest.mark.scripts
def test_sigterm_stops_the_server_with_143(tiny, processes):
    process = processes.start([sys.executable, str(REPO / "scripts" / "serve.py"), "--checkpoint", str(tiny[0]),
                               "--port", "0"])
    line = process.stdout.readline()  # "serving ... at http://..." once it listens
    assert line.startswith("serving")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143 and stderr.strip().splitlines() == ["stopped"]
