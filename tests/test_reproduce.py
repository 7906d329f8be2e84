import json
import math

import pytest
import torch
from PIL import Image

from torch_mnist import TrainConfig
from torch_mnist.reports.reference import reference_history
from torch_mnist.reports.reproduce import reference_z_scores, run_seeds, summarize, summary_table

from torch_mnist.commands.reproduce import main as reproduce_main

from conftest import assert_one_line_error_in_process, run_in_process


def _history(loss, accuracy):
    return {"loss": loss, "accuracy": accuracy, "val_loss": loss, "val_accuracy": accuracy}


class TestSummaries:
    def test_mean_and_sample_std_per_epoch(self):
        summary = summarize([_history([1.0, 0.5], [0.8, 0.9]), _history([3.0, 0.5], [0.6, 0.9])])
        assert summary["loss"]["mean"] == [2.0, 0.5]
        assert summary["loss"]["std"] == [pytest.approx(math.sqrt(2)), 0.0]
        assert summary["accuracy"]["mean"] == [pytest.approx(0.7), pytest.approx(0.9)]

    def test_reference_inside_our_spread_scores_low(self):
        reference = reference_history()
        runs = []
        for shift in (-0.001, 0.001):
            runs.append({key: [(0.5 if v is None else v) + shift for v in values]
                         for key, values in reference.items()})
        scores = reference_z_scores(summarize(runs))
        # Our mean is the reference exactly: every z-score is 0.
        assert scores["all"] == pytest.approx(0.0, abs=1e-9)

    def test_reference_far_from_our_runs_scores_high(self):
        reference = reference_history()
        runs = [{key: [(0.5 if v is None else v) + 0.1 + shift for v in values]
                 for key, values in reference.items()} for shift in (-0.001, 0.001)]
        assert reference_z_scores(summarize(runs))["loss"] > 50

    def test_table_rows(self):
        table = summary_table(summarize([_history([1.0], [0.8]), _history([3.0], [0.6])]))
        assert table.splitlines()[2].startswith("| 1 | 2.0000 ± 1.4 | 0.4194 | 0.7000 ± 0.14 | 0.8802 |")


class TestFinalPosition:
    def test_fraction_and_z(self):
        from torch_mnist.reports.reproduce import final_position
        runs = [{k: [0.5] * 19 + [v] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
                for v in (0.98, 0.982, 0.984, 0.986)]
        position = final_position(runs)["val_accuracy"]  # the reference's epoch 20: 0.9837
        assert position["reference"] == 0.9837 and position["fraction_of_runs_below"] == 0.5
        assert position["z"] == pytest.approx((0.9837 - 0.983) / 0.0025819889, rel=1e-6)


class TestRunSeeds:
    def test_seeds_differ_and_are_checkpointed(self, synthetic_root, tmp_path):
        histories = run_seeds(TrainConfig(epochs=2), [0, 1], synthetic_root, torch.device("cpu"), tmp_path / "runs")
        assert len(histories) == 2 and histories[0] != histories[1]
        assert (tmp_path / "runs" / "seed0.pt").is_file() and (tmp_path / "runs" / "seed1.json").is_file()

    def test_script(self, synthetic_root, tmp_path, capsys):
        result = run_in_process(reproduce_main, ["--seeds", 2, "--epochs", 1, "--data-dir", synthetic_root,
                                                 "--out-dir", tmp_path / "runs"], capsys)
        assert result.returncode == 0, result.stderr
        saved = json.loads((tmp_path / "runs" / "summary.json").read_text())
        assert saved["seeds"] == 2 and len(saved["histories"]) == 2
        assert set(saved["reference_final_position"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert "± " in result.stdout and "reference's final epoch among our runs" in result.stdout
        assert Image.open(tmp_path / "runs" / "seeds.png").size[0] > 600

    def test_script_needs_two_seeds(self, synthetic_root, tmp_path, capsys):
        args = ["--seeds", 1, "--data-dir", synthetic_root, "--out-dir", tmp_path / "r"]
        assert_one_line_error_in_process(reproduce_main, args, capsys,
                                         "--seeds must be from 2 (to measure a spread) to 1000, got 1")
        assert not (tmp_path / "r").exists()
