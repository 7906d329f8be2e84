"""The scripts as users run them: subprocesses, exit codes, what is printed and written."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_one_line_error_in_process, run_in_process, run_script, save_with_digest
from torch_mnist import TrainConfig, load_checkpoint, run_training
from torch_mnist.training import run as training
from torch_mnist.commands.train import main as train_main
from torch_mnist.commands.evaluate import main as evaluate_main


def _parse_figures(stdout):
    figures = dict(line.split(": ", 1) for line in stdout.splitlines() if line.startswith(("loss: ", "acc: ")))
    return float(figures["loss"]), float(figures["acc"])


@pytest.mark.slow
class TestRealRun:
    def test_one_epoch_then_evaluate_reproduces_its_figures(self, real_root, tmp_path, capsys):
        out = tmp_path / "ckpt.pt"
        trained = run_in_process(train_main, ["--epochs", 1, "--data-dir", real_root, "--out", out, "--device", "cpu"],
                                 capsys)
        assert trained.returncode == 0, trained.stderr
        assert "Epoch 1/1" in trained.stdout and "469/469" in trained.stdout
        assert "\r" not in trained.stdout  # a log file gets whole lines, not a redrawn bar
        assert "| 1 | " in trained.stdout and "0.4194" in trained.stdout  # the reference beside ours
        history = json.loads(out.with_suffix(".json").read_text())["history"]
        assert history["val_accuracy"][0] >= 0.95
        assert _parse_figures(trained.stdout) == (history["val_loss"][-1], history["val_accuracy"][-1])

        evaluated = run_script("evaluate", "--checkpoint", out, "--data-dir", real_root, "--device", "cpu")
        assert evaluated.returncode == 0, evaluated.stderr
        loss, accuracy = _parse_figures(evaluated.stdout)
        assert accuracy == history["val_accuracy"][-1]
        assert loss == pytest.approx(history["val_loss"][-1], rel=1e-9)


class TestTrainScript:
    def test_missing_data_is_one_line(self, tmp_path, capsys):
        assert_one_line_error_in_process(train_main, ["--data-dir", tmp_path / "none", "--out", tmp_path / "c.pt"],
                                         capsys, str(tmp_path / "none" / "MNIST" / "raw"),
                                         "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "download failed")
        assert not (tmp_path / "c.pt").exists()

    @pytest.mark.parametrize("flags, message", [
        (["--epochs", "0"], "--epochs must be an integer from 1 to 1000000000, got 0"),
        (["--batch-size", "-1"], "--batch-size must be an integer from 1 to 1000000000, got -1"),
        (["--seed", str(2 ** 70)], f"--seed must be an integer from 0 to {2 ** 64 - 1}, got {2 ** 70}"),
        (["--seed", "-1"], "--seed must be an integer from 0 to"),
        (["--hidden", "70000"], "--hidden must be 1 to 64 layer widths from 1 to 65536"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--save-every", "0"], "--save-every must be a positive integer"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--out", "{tmp}/no/such/folder/c.pt"], "does not exist"),
        (["--out", "{tmp}"], "is a directory"),
    ])
    def test_bad_flags_are_rejected_before_any_work(self, synthetic_root, tmp_path, flags, message, capsys):
        flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt",
                                                      *flags], capsys, message)
        assert not (tmp_path / "c.pt").exists()

    def test_unwritable_output_folder(self, synthetic_root, tmp_path, capsys):
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        try:
            if os.access(folder, os.W_OK):
                pytest.skip("running as a user who can write anywhere (root)")
            assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", folder / "c.pt"],
                                             capsys, "is not writable")
        finally:
            folder.chmod(0o700)

    def test_output_folder_nobody_can_write(self, synthetic_root, capsys):
        # /proc refuses new files even to root, so this runs wherever the tests run.
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", "/proc/ckpt.pt"],
                                         capsys, "--out /proc/ckpt.pt: folder /proc is not writable")

    def test_verify_data_rejects_files_that_are_not_the_official_release(self, synthetic_root, tmp_path, capsys):
        assert_one_line_error_in_process(
            train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt", "--verify-data"], capsys,
            "train-images-idx3-ubyte: MD5", "differs from the official release")
        assert not (tmp_path / "c.pt").exists()

    def test_corrupted_data_file_is_named(self, synthetic_root, tmp_path, capsys):
        labels = synthetic_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
        labels.write_bytes(labels.read_bytes()[:-10])
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt"],
                                         capsys, str(labels), "truncated or corrupted")

    def test_cuda_requested_without_cuda(self, synthetic_root, tmp_path, capsys):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        assert_one_line_error_in_process(
            train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt", "--device", "cuda"], capsys,
            "CUDA is not available")

    def test_divergence_after_a_saved_epoch_keeps_that_epoch(self, synthetic_root, tmp_path, capsys, monkeypatch):
        out = tmp_path / "c.pt"
        real_train_one_epoch, epochs_started = training.train_one_epoch, []

        def diverging_in_epoch_2(model, batches, optimizer, *args, **kwargs):
            epochs_started.append(1)
            if len(epochs_started) == 2:  # a learning rate that overflows the weights at once
                for group in optimizer.param_groups:
                    group["lr"] = 1e38
            return real_train_one_epoch(model, batches, optimizer, *args, **kwargs)

        monkeypatch.setattr(training, "train_one_epoch", diverging_in_epoch_2)
        assert_one_line_error_in_process(
            train_main, ["--data-dir", synthetic_root, "--out", out, "--epochs", 3, "--quiet", "--no-plots"], capsys,
            "at epoch 2, step", "try a smaller --lr", f"epoch 1 is saved in {out}")
        saved = load_checkpoint(out)
        assert saved["epoch"] == 1 and saved["config"]["lr"] == 1e-3
        assert all(torch.isfinite(tensor).all() for tensor in saved["model_state"].values())

    def test_resume_continues_to_the_same_history(self, synthetic_root, tmp_path, capsys):
        common = ["--data-dir", synthetic_root, "--quiet", "--no-plots"]
        for epochs, out in ((3, "one.pt"), (1, "two.pt")):
            assert run_in_process(train_main, [*common, "--epochs", epochs, "--out", tmp_path / out],
                                  capsys).returncode == 0
        resumed = run_in_process(train_main, [*common, "--epochs", 3, "--resume", tmp_path / "two.pt"], capsys)
        assert resumed.returncode == 0, resumed.stderr
        one = json.loads((tmp_path / "one.json").read_text())
        two = json.loads((tmp_path / "two.json").read_text())
        assert two["history"] == one["history"] and two["epoch"] == 3

    def test_resume_with_zero_epochs_is_refused_not_read_as_twenty(self, synthetic_root, tmp_path, capsys):
        out = tmp_path / "c.pt"
        assert run_in_process(train_main, ["--data-dir", synthetic_root, "--epochs", 1, "--quiet", "--no-plots",
                                           "--out", out], capsys).returncode == 0
        before = out.read_bytes()
        assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--resume", out, "--epochs", 0],
                                         capsys, "--epochs must be an integer from 1 to")
        assert out.read_bytes() == before

    def test_resume_refuses_changed_hyperparameters(self, synthetic_root, tmp_path, capsys):
        trained = run_in_process(train_main, ["--data-dir", synthetic_root, "--epochs", 1, "--quiet", "--no-plots",
                                              "--out", tmp_path / "c.pt"], capsys)
        assert trained.returncode == 0, trained.stderr
        before = (tmp_path / "c.pt").read_bytes()
        # the speed options change the arithmetic's rounding too
        for flags, name in ((["--lr", "0.1"], "--lr"), (["--no-compile"], "--compile"), (["--amp", "bf16"], "--amp")):
            args = ["--data-dir", synthetic_root, "--resume", tmp_path / "c.pt", *flags]
            assert_one_line_error_in_process(train_main, args, capsys, f"{name} cannot be changed when resuming")
        assert (tmp_path / "c.pt").read_bytes() == before

    @pytest.mark.scripts
    @pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_signal_stops_cleanly_and_keeps_last_epoch(self, synthetic_root, tmp_path, sig, code, processes):
        out = tmp_path / "c.pt"
        process = processes.start([sys.executable, str(REPO / "scripts" / "train.py"), "--data-dir",
                                   str(synthetic_root), "--epochs", "100000", "--out", str(out), "--quiet",
                                   "--device", "cpu", "--log-csv", str(tmp_path / "log.csv")])
        deadline = time.monotonic() + 120
        while not out.with_suffix(".json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # wait for the first epoch's checkpoint
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr
        epoch = json.loads(out.with_suffix(".json").read_text())["epoch"]
        assert lines[0] == (f"interrupted: epoch {epoch} is saved in {out}; continue with: "
                            f"python scripts/train.py --resume {out} --epochs 100000 --data-dir {synthetic_root} "
                            f"--device cpu --log-csv {tmp_path / 'log.csv'}")  # the same data, device and log
        assert torch.load(out, weights_only=True)["epoch"] == epoch

    @pytest.mark.scripts
    @pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
    def test_a_signal_during_start_up_is_one_line_too(self, synthetic_root, tmp_path, sig, code, processes):
        status = Path("/proc/self/status")
        if not status.exists():
            pytest.skip("needs /proc to see when the script has installed its handlers")
        process = processes.start([sys.executable, str(REPO / "scripts" / "train.py"), "--data-dir",
                                   str(synthetic_root), "--epochs", "3", "--out", str(tmp_path / "c.pt"), "--quiet"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _catches(process.pid, signal.SIGTERM):
            time.sleep(0.01)  # the moment the handlers are in: torch is still being imported
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr
        assert stderr.strip().splitlines()[-1].startswith("interrupted") and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (Linux's /proc/PID/status, SigCgt)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except OSError:
        pass
    return False


class TestEvaluateScript:
    @pytest.mark.parametrize("content, message", [
        (None, "no such checkpoint file"),
        (b"", "empty file"),
        (b"plain text, not a checkpoint\n", "a text file, not a checkpoint"),
    ])
    def test_bad_checkpoint_is_one_line(self, tmp_path, content, message, capsys):
        path = tmp_path / "ckpt.pt"
        if content is not None:
            path.write_bytes(content)
        assert_one_line_error_in_process(evaluate_main, ["--checkpoint", path], capsys, str(path), message)
        if content is not None:
            assert path.read_bytes() == content

    def test_directory_is_one_line(self, tmp_path, capsys):
        assert_one_line_error_in_process(evaluate_main, ["--checkpoint", tmp_path], capsys, "is a directory")


def test_variant_trains_and_evaluates_from_its_checkpoint(synthetic_root, tmp_path, capsys):
    out = tmp_path / "mlp2.pt"
    trained = run_in_process(train_main, ["--data-dir", synthetic_root, "--epochs", 1, "--hidden", 32, 32,
                                          "--dropout", 0.2, "--out", out, "--quiet", "--no-plots"], capsys)
    assert trained.returncode == 0, trained.stderr
    evaluated = run_in_process(evaluate_main, ["--checkpoint", out, "--data-dir", synthetic_root, "--json"], capsys)
    assert evaluated.returncode == 0, evaluated.stderr
    history = json.loads(out.with_suffix(".json").read_text())
    assert history["config"]["hidden"] == [32, 32]
    assert json.loads(evaluated.stdout)["accuracy"] == history["history"]["val_accuracy"][-1]


@pytest.mark.parametrize("flags, message", [
    (["--hidden", "0"], "--hidden must be 1 to 64 layer widths from 1 to 65536, got [0]"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
])
def test_bad_variant_flags(synthetic_root, tmp_path, flags, message, capsys):
    assert_one_line_error_in_process(train_main, ["--data-dir", synthetic_root, "--out", tmp_path / "c.pt", *flags],
                                     capsys, message)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable checkpoint"),
    ("config", "but the configured model (hidden [256]) needs"),
])
def test_evaluate_refuses_a_damaged_checkpoint_without_touching_it(synthetic_root, tmp_path, damage, message,
                                                                   capsys):
    out = tmp_path / "c.pt"
    run_training(TrainConfig(epochs=1), synthetic_root, torch.device("cpu"), out)  # in process: quicker
    if damage == "truncate":
        out.write_bytes(out.read_bytes()[:4096])
    else:
        checkpoint = torch.load(out, weights_only=True)
        checkpoint["config"]["hidden"] = [256]  # weights of 512 units, claiming 256
        save_with_digest(checkpoint, out)
    before = out.read_bytes()
    assert_one_line_error_in_process(evaluate_main, ["--checkpoint", out, "--data-dir", synthetic_root], capsys,
                                     str(out), message)
    assert out.read_bytes() == before
