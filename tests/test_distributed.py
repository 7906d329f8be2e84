"""torchrun data-parallel training (gloo, 2 processes) against the single-process run."""

import json
import sys

import pytest
import torch

from torch_mnist import UserError
from torch_mnist.distributed import Shard, check_divisible

from conftest import REPO, make_synthetic_root, run_command, run_script

pytestmark = pytest.mark.torchrun


def torchrun(*args, nproc=2):
    """scripts/train.py under torchrun on the CPU (gloo), whatever GPUs the machine has."""
    return run_command([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        REPO / "scripts" / "train.py", "--device", "cpu", *args])


class TestSharding:
    def test_contiguous_equal_shares(self):
        batch = torch.arange(8)
        assert Shard(0, 2).of(batch).tolist() == [0, 1, 2, 3]
        assert Shard(1, 2).of(batch).tolist() == [4, 5, 6, 7]
        assert Shard().of(batch) is batch

    def test_batches_must_divide(self):
        check_divisible(60000, 128, 2)  # 128 and the last 96 both divide by 2
        with pytest.raises(UserError, match="both must divide by the 3 processes"):
            check_divisible(60000, 128, 3)
        with pytest.raises(UserError, match="batches of 128 and 88"):
            check_divisible(600, 128, 16)


@pytest.mark.parametrize("semantics, tolerance", [("keras3", 1e-6), ("keras2", 1e-5)])
def test_an_epoch_with_a_short_last_batch_matches_single_process(tmp_path, semantics, tolerance):
    # 600 images in batches of 128: four full steps and a last one of 88, 44 per rank.
    # Under keras2 (eps outside the square root) a gradient that is zero up to rounding, ~1e-10,
    # still moves its weight by ~lr * g / eps ~ 1e-6, so summation order alone shows at 1e-6;
    # keras3's sqrt(v + eps) damps such gradients, and the runs agree to 1e-6.
    root = make_synthetic_root(tmp_path / "data", train=600, test=200)
    flags = ["--data-dir", root, "--epochs", 1, "--quiet", "--no-plots", "--keras-semantics", semantics]
    single = run_script("train", *flags, "--out", tmp_path / "one.pt", "--device", "cpu")
    assert single.returncode == 0, single.stderr
    parallel = torchrun(*flags, "--out", tmp_path / "two.pt")
    assert parallel.returncode == 0, parallel.stderr
    one = torch.load(tmp_path / "one.pt", weights_only=True)["model_state"]
    two = torch.load(tmp_path / "two.pt", weights_only=True)["model_state"]
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=tolerance)
    assert parallel.stdout.count("loss: ") == 1  # only rank 0 reports


def test_uneven_shares_are_rejected_on_every_rank(tmp_path):
    root = make_synthetic_root(tmp_path / "data", train=600, test=200)
    # 600 images in batches of 101: 2 processes cannot split 101 evenly.
    result = torchrun("--data-dir", root, "--epochs", 1, "--out", tmp_path / "d.pt", "--batch-size", 101)
    assert result.returncode != 0
    # Each rank ends with our one line; torchrun then adds its own report of the failed workers.
    assert "both must divide by the 2 processes" in result.stderr
    # No traceback frame in our own files, wherever the checkout lives (torchrun adds frames of its own).
    assert f'File "{REPO / "torch_mnist"}' not in result.stderr
    assert f'File "{REPO / "scripts"}' not in result.stderr
    assert not (tmp_path / "d.pt").exists()


def test_resume_under_torchrun_equals_one_go(tmp_path):
    root = make_synthetic_root(tmp_path / "data", train=512, test=200)  # 4 steps per epoch
    flags = ["--data-dir", root, "--quiet", "--no-plots"]
    assert torchrun(*flags, "--epochs", 2, "--out", tmp_path / "one.pt").returncode == 0
    assert torchrun(*flags, "--epochs", 1, "--out", tmp_path / "two.pt").returncode == 0
    resumed = torchrun("--quiet", "--no-plots", "--data-dir", root, "--epochs", 2, "--resume", tmp_path / "two.pt")
    assert resumed.returncode == 0, resumed.stderr
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["epoch"] == 2 and two["history"] == one["history"]
