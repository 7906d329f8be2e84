"""torchrun data-parallel training (gloo, 2 processes) against the single-process run."""

import json
import re
import sys

import pytest
import torch

from torch_mnist import TrainConfig, UserError, run_training
from torch_mnist.distributed import Shard, check_divisible, dropout_seed, local_main_first, rank_device

from conftest import REPO, make_synthetic_root, run_command


def torchrun(*args, nproc=2, script=REPO / "scripts" / "train.py", timeout=300):
    """scripts/train.py under torchrun on the CPU (gloo), whatever GPUs the machine has."""
    return run_command([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        script, "--device", "cpu", *args], timeout=timeout)


class TestSharding:
    def test_contiguous_equal_shares(self):
        batch = torch.arange(8)
        assert Shard(0, 2).of(batch).tolist() == [0, 1, 2, 3]
        assert Shard(1, 2).of(batch).tolist() == [4, 5, 6, 7]
        assert Shard().of(batch) is batch

    @pytest.mark.parametrize("spec, local_world_size, gpus, expected", [
        ("cpu", 2, 4, "cpu"),
        ("auto", 2, 0, "cpu"),
        ("auto", 2, 2, "cuda:1"),
        ("cuda", 2, 2, "cuda:1"),
    ])
    def test_each_rank_gets_its_device(self, spec, local_world_size, gpus, expected):
        assert str(rank_device(spec, 1, local_world_size, gpus)) == expected

    @pytest.mark.parametrize("spec, local_world_size, gpus, message", [
        ("cuda:3", 2, 4, "--device cuda:3: under torchrun each process uses the GPU of its LOCAL_RANK"),
        ("tpu", 2, 4, "--device 'tpu' is not a device under torchrun"),
        ("cuda", 2, 0, "--device cuda: CUDA is not available on this machine"),
        ("cuda", 4, 2, "--device cuda: 4 processes on this node but 2 GPU(s); one GPU per process: "
                       "--nproc_per_node 2"),
        ("auto", 2, 1, "2 processes on this node but 1 GPU(s)"),  # two ranks on one GPU fail inside NCCL
    ])
    def test_devices_no_rank_could_use_are_refused_before_joining(self, spec, local_world_size, gpus, message):
        with pytest.raises(UserError, match=re.escape(message)):
            rank_device(spec, 0, local_world_size, gpus)

    def test_batches_must_divide(self):
        check_divisible(60000, 128, 2)  # 128 and the last 96 both divide by 2
        with pytest.raises(UserError, match="both must divide by the 3 processes"):
            check_divisible(60000, 128, 3)
        with pytest.raises(UserError, match="batches of 128 and 88"):
            check_divisible(600, 128, 16)


@pytest.mark.torchrun
@pytest.mark.parametrize("semantics, tolerance", [("keras2", 1e-5)])  # keras3 agrees to 1e-6 (README)
def test_an_epoch_with_a_short_last_batch_matches_single_process(tmp_path, semantics, tolerance):
    # 600 images in batches of 128: four full steps and a last one of 88, 44 per rank.
    # Under keras2 (eps outside the square root) a gradient that is zero up to rounding, ~1e-10,
    # still moves its weight by ~lr * g / eps ~ 1e-6, so summation order alone shows at 1e-6;
    # keras3's sqrt(v + eps) damps such gradients, and the runs agree to 1e-6.
    root = make_synthetic_root(tmp_path / "data", train=600, test=200)
    flags = ["--data-dir", root, "--epochs", 1, "--quiet", "--no-plots", "--keras-semantics", semantics]
    run_training(TrainConfig(epochs=1, keras_semantics=semantics), root, torch.device("cpu"), tmp_path / "one.pt")
    parallel = torchrun(*flags, "--out", tmp_path / "two.pt")
    assert parallel.returncode == 0, parallel.stderr
    one = torch.load(tmp_path / "one.pt", weights_only=True)["model_state"]
    two = torch.load(tmp_path / "two.pt", weights_only=True)["model_state"]
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=tolerance)
    assert parallel.stdout.count("loss: ") == 1  # only rank 0 reports


@pytest.mark.torchrun
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


@pytest.mark.torchrun
def test_a_nan_on_one_rank_ends_every_rank_together(tmp_path):
    root = make_synthetic_root(tmp_path / "data", train=600, test=200)
    # Well inside the 2-minute collective timeout: a rank left waiting would show as a timeout here.
    result = torchrun("--data-dir", root, "--epochs", 3, "--out", tmp_path / "c.pt", "--quiet", "--no-plots",
                      script=REPO / "tests" / "torchrun_nan_on_rank_1.py", timeout=100)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: the loss was not finite at epoch 1, step 2; the run diverged - try a smaller --lr "
                      "(the reference uses 0.001); no epoch completed, so no checkpoint was written"], result.stderr
    assert "Timeout" not in result.stderr and "watchdog" not in result.stderr.lower()
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.torchrun
def test_a_full_disk_on_rank_0_ends_every_rank_together(tmp_path):
    root = make_synthetic_root(tmp_path / "data", train=600, test=200)
    result = torchrun("--data-dir", root, "--epochs", 3, "--out", tmp_path / "c.pt", "--quiet", "--no-plots",
                      script=REPO / "tests" / "torchrun_full_disk_on_rank_0.py", timeout=100)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {tmp_path / 'c.pt'}: the checkpoint of epoch 1 could not be written (No space left "
                      "on device)"], result.stderr
    # rank 1 left at once (well inside the collective timeout), with no line of its own
    assert "Timeout" not in result.stderr and "watchdog" not in result.stderr.lower()
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.torchrun
def test_dropout_masks_differ_across_ranks_and_a_dropout_run_resumes_bit_for_bit(tmp_path):
    root = make_synthetic_root(tmp_path / "data", train=512, test=200)
    flags = ["--data-dir", root, "--quiet", "--no-plots", "--hidden", 32, "--dropout", 0.5]
    assert torchrun(*flags, "--epochs", 2, "--out", tmp_path / "one.pt", "--log-csv", tmp_path / "log.csv",
                    ).returncode == 0
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # header and 2 epochs: rank 0 logs alone
    assert torchrun(*flags, "--epochs", 1, "--out", tmp_path / "two.pt").returncode == 0
    split = torch.load(tmp_path / "two.pt", weights_only=True)
    rank0, rank1 = split["rank_rng_states"]["torch"]
    assert not torch.equal(rank0, rank1)  # each rank its own dropout stream, so its own masks
    resumed = torchrun("--quiet", "--no-plots", "--data-dir", root, "--epochs", 2, "--resume", tmp_path / "two.pt")
    assert resumed.returncode == 0, resumed.stderr
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["history"] == one["history"]
    one_weights = torch.load(tmp_path / "one.pt", weights_only=True)["model_state"]
    two_weights = torch.load(tmp_path / "two.pt", weights_only=True)["model_state"]
    assert all(torch.equal(one_weights[name], two_weights[name]) for name in one_weights)


def test_each_rank_has_its_own_dropout_seed():
    seeds = [dropout_seed(0, rank) for rank in range(4)]
    assert seeds[0] == 0 and len(set(seeds)) == 4  # rank 0 keeps the run's seed: one process is unchanged
    assert dropout_seed(1, 1) != dropout_seed(0, 1) and all(0 <= s < 2 ** 64 for s in seeds)


@pytest.mark.torchrun
def test_data_that_cannot_be_prepared_ends_every_rank_with_one_line(tmp_path):
    # /proc takes no new folders: rank 0's attempt to fetch the files fails at once, before any network.
    result = torchrun("--data-dir", "/proc/torch_mnist_data", "--epochs", 1, "--out", tmp_path / "c.pt", timeout=100)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "/proc/torch_mnist_data/MNIST/raw" in errors[0], result.stderr  # rank 0's alone
    assert "Timeout" not in result.stderr and not (tmp_path / "c.pt").exists()


def test_the_local_main_prepares_alone_in_one_process():
    calls = []
    assert local_main_first(lambda: calls.append(1) or "prepared", Shard(), torch.device("cpu")) == "prepared"
    assert calls == [1]
