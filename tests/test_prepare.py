import gzip
import shutil
from pathlib import Path

import pytest

from torch_mnist import Normalization, UserError, load_mnist
from torch_mnist.commands.train import main as train_main
from torch_mnist.commands.evaluate import main as evaluate_main
from torch_mnist.data.idx import RAW_FILES, check_split
from torch_mnist.data.prepare import prepare_dataset

from torch_mnist.commands.prepare import main as prepare_main

from conftest import assert_one_line_error_in_process, run_in_process

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


class TestPrepare:
    def test_gzip_and_dotted_names_are_installed(self, synthetic_root, tmp_path):
        source = tmp_path / "download"
        source.mkdir()
        for name in RAW_FILES:
            data = (synthetic_root / "MNIST" / "raw" / name).read_bytes()
            dotted = name.replace("-idx", ".idx")
            if "train" in name:
                (source / (dotted + ".gz")).write_bytes(gzip.compress(data))
            else:
                (source / dotted).write_bytes(data)
        folder = prepare_dataset("kmnist", source, tmp_path / "root")
        assert folder == tmp_path / "root" / "KMNIST" / "raw"
        assert check_split(folder, "train") == 600 and check_split(folder, "test") == 200
        assert sorted(p.name for p in folder.iterdir()) == sorted(RAW_FILES)  # no staging left

    def test_bad_source_never_replaces_good_files(self, synthetic_root, tmp_path):
        good = prepare_dataset("mnist", synthetic_root / "MNIST" / "raw", tmp_path / "root")
        before = {name: (good / name).read_bytes() for name in RAW_FILES}
        bad = tmp_path / "bad"
        shutil.copytree(synthetic_root / "MNIST" / "raw", bad)
        labels = bad / "t10k-labels-idx1-ubyte"
        labels.write_bytes(labels.read_bytes()[:-3])
        with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
            prepare_dataset("mnist", bad, tmp_path / "root")
        assert {name: (good / name).read_bytes() for name in RAW_FILES} == before

    def test_missing_file_is_named(self, tmp_path):
        (tmp_path / "src").mkdir()
        with pytest.raises(UserError, match="no train-images-idx3-ubyte"):
            prepare_dataset("mnist", tmp_path / "src", tmp_path / "root")

    def test_script_errors_are_one_line(self, tmp_path, capsys):
        assert_one_line_error_in_process(prepare_main, ["--dataset", "mnist", "--source", tmp_path / "nope",
                                                        "--data-dir", tmp_path / "root"], capsys, "not a folder")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (done by .ci/run)")
def test_debian_fashion_mnist_installs_with_its_statistics_and_trains_one_epoch(tmp_path, capsys):
    root = tmp_path / "root"
    assert run_in_process(prepare_main, ["--dataset", "fashion-mnist", "--source", FASHION, "--data-dir", root],
                          capsys).returncode == 0
    pixels = load_mnist(root, train=True, dataset="fashion-mnist").data.double() / 255
    standardize = Normalization.named("standardize", "fashion-mnist")
    assert (round(pixels.mean().item(), 4), round(pixels.std().item(), 4)) == (standardize.mean, standardize.std)
    out = tmp_path / "fashion.pt"
    trained = run_in_process(train_main, ["--dataset", "fashion-mnist", "--data-dir", root, "--epochs", 1,
                                          "--out", out, "--quiet", "--no-plots"], capsys)
    assert trained.returncode == 0, trained.stderr
    assert "| epoch |" not in trained.stdout  # the MNIST reference table is not printed for Fashion-MNIST
    evaluated = run_in_process(evaluate_main, ["--checkpoint", out, "--data-dir", root], capsys)
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = float(evaluated.stdout.splitlines()[1].split(": ")[1])
    assert accuracy >= 0.80
    assert "Ankle boot" in evaluated.stdout and "T-shirt/top" in evaluated.stdout  # its own class names


def test_an_unwritable_data_root_is_one_line(synthetic_root, capsys):
    # /proc takes no new folders, even from root.
    args = ["--dataset", "mnist", "--source", synthetic_root / "MNIST" / "raw", "--data-dir", "/proc/torch_mnist"]
    assert_one_line_error_in_process(prepare_main, args, capsys, "--data-dir /proc/torch_mnist: cannot write")
