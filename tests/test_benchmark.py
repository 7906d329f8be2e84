import json

import pytest
import torch

from torch_mnist.benchmark import format_report, matmul_floor, run_benchmark

from conftest import run_script

CPU = torch.device("cpu")


class TestBenchmark:
    def test_floor_covers_the_five_products(self):
        floor = matmul_floor(CPU)
        assert len(floor["per_shape"]) == 5 and floor["steps"] == 469
        assert all(row["seconds"] > 0 and row["gflops"] > 0 for row in floor["per_shape"].values())
        assert floor["epoch_seconds"] > floor["steps"] * floor["step_seconds"]  # plus validation

    def test_report_on_synthetic_data(self, synthetic_root):
        result = run_benchmark(synthetic_root, CPU, repeats=2, loader_repeats=1, variants=("compile", "bf16"))
        report = format_report(result)
        assert "| fast path (in-memory), seconds per epoch |" in report
        assert "| fast path with --compile, seconds per epoch |" in report
        assert "| fast path with --amp bf16 (bf16 matmuls), seconds per epoch |" in report
        assert "| DataLoader path, seconds per epoch |" in report
        fast = result["fast_epoch_seconds"]
        assert len(fast["runs"]) == 2 and all(run["floor_seconds"] > 0 for run in fast["runs"])
        ratios = sorted(run["seconds"] / run["floor_seconds"] for run in fast["runs"])
        assert fast["x_floor"] == pytest.approx(sum(ratios) / 2)  # the median of two
        assert f"| {fast['x_floor']:.2f} |" in report
        assert result["profile"] and result["profile"][0]["ms_per_step"] > 0
        if "keras_epoch_seconds" in result:  # with the parity extra installed
            assert "| Keras 3 (torch backend), seconds per epoch |" in report
        json.dumps(result)  # everything in it is JSON-ready

    def test_script_writes_json(self, synthetic_root, tmp_path):
        out = tmp_path / "bench.json"
        result = run_script("benchmark", "--data-dir", synthetic_root, "--repeats", 1, "--loader-repeats", 0,
                            "--variants", "--out", out)
        assert result.returncode == 0, result.stderr
        assert json.loads(out.read_text())["fast_epoch_seconds"]["median"] > 0
        assert "matmul floor" in result.stdout


@pytest.mark.slow
def test_both_loaders_agree_on_a_real_epoch(real_root, tmp_path):
    from torch_mnist import TrainConfig, run_training
    histories = [run_training(TrainConfig(epochs=1, loader=loader), real_root, CPU, tmp_path / f"{loader}.pt").history
                 for loader in ("memory", "dataloader")]
    assert histories[0].keys() == histories[1].keys()
    assert histories[0]["val_accuracy"][0] >= 0.95
    assert histories[1]["val_accuracy"][0] == pytest.approx(histories[0]["val_accuracy"][0], abs=2e-3)
