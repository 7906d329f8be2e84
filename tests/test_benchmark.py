import importlib.util
import json
import os

import pytest
import torch

from torch_mnist.reports import benchmark
from torch_mnist.reports.bench_tables import format_report
from torch_mnist.reports.benchmark import matmul_floor, run_benchmark

from torch_mnist.commands.benchmark import main as benchmark_main

from conftest import assert_one_line_error_in_process, make_synthetic_root, run_in_process

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One benchmark of every row on synthetic data, its result and report, read by the tests of its rows (a run
    costs tens of seconds). Its fast path compiles, as make bench's does; of the peers only Keras 3 on torch
    (where the parity extra is): the JAX peers have tests of their own."""
    from torch_mnist.reports.peers import keras_peer

    root = make_synthetic_root(tmp_path_factory.mktemp("benchmark") / "synthetic")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark, "peer_timers", lambda train_set, test_set: {
            key: timer for key, timer in {"keras_epoch_seconds": keras_peer(train_set, test_set)}.items() if timer})
        result = run_benchmark(root, CPU, repeats=2, loader_repeats=1, variants=("eager",))
    return result, format_report(result)


class TestBenchmark:
    def test_floor_times_exactly_the_matrix_work_of_a_training_step(self):
        floor = matmul_floor(CPU, repeats=1)
        assert floor["steps"] == 469
        # A step's unavoidable matmuls: two forward products, two weight gradients and the gradient
        # into the hidden layer (the input needs none), counted here from the model's shapes.
        batch, pixels, hidden, classes = 128, 784, 512, 10
        step_flops = 2 * batch * (pixels * hidden + hidden * classes) * 2 + 2 * batch * classes * hidden
        timed_flops = sum(row["gflops"] * 1e9 * row["seconds"] for row in floor["per_shape"].values())
        assert timed_flops == pytest.approx(step_flops, rel=1e-9)

    @pytest.mark.compile
    def test_report_on_synthetic_data(self, synthetic_run):
        result, report = synthetic_run
        step = result["fast_epoch_seconds"]["step"]  # "eager" only where torch.compile cannot build here
        assert step in ("compiled", "eager")
        assert f"| fast path (in-memory, {step} step), seconds per epoch |" in report
        assert "| fast path with eager steps (--no-compile), seconds per epoch |" in report
        assert result["variants"]["eager"]["step"] == "eager"
        assert result["cpu"] in report.splitlines()[0] and result["cpu_capability"] in report.splitlines()[0]
        assert result["sequenced_floor_seconds"] > 0
        assert list(result["step_phases_ms"]) == list(benchmark.PHASES)
        assert all(ms > 0 for ms in result["step_phases_ms"].values())
        assert "| whole step |" in report and "| backward |" in report
        alone = result["update_alone_ms"]
        assert alone["compiled"] > 0 and alone["foreach"] > 0
        assert "The optimizer's update alone" in report
        assert "| the same products in a step's order, a new batch each step |" in report
        assert "| DataLoader path, seconds per epoch |" in report
        fast = result["fast_epoch_seconds"]
        assert len(fast["runs"]) == 2 and all(run["floor_seconds"] > 0 for run in fast["runs"])
        ratios = sorted(run["seconds"] / run["floor_seconds"] for run in fast["runs"])
        assert fast["x_floor"] == pytest.approx(sum(ratios) / 2)  # the median of two
        assert f"| {fast['x_floor']:.2f} |" in report
        assert result["profile"] and result["profile"][0]["ms_per_step"] > 0
        json.dumps(result)  # everything in it is JSON-ready

    @pytest.mark.compile
    @pytest.mark.keras
    def test_keras_and_deployment_rows(self, synthetic_run):
        result, report = synthetic_run
        if "keras_epoch_seconds" not in result:
            pytest.skip("Keras 3 cannot run here: the parity extra is not installed")
        assert "| Keras 3 (torch backend), seconds per epoch |" in report
        assert result["keras_epoch_seconds"]["median"] > 0
        if importlib.util.find_spec("onnxruntime") is not None:  # the export extra: eager and onnxruntime
            assert set(result["deployment"]) == {"eager PyTorch", "onnxruntime"}
            assert "| deployed model, onnxruntime: 10,000 images |" in report

    @pytest.mark.compile  # under jax.jit
    def test_the_jax_peer_trains_the_same_program(self, synthetic_root):
        pytest.importorskip("jax", reason="the peers extra is not installed (make bench installs it)")
        from torch_mnist import Normalization, decode, load_mnist
        from torch_mnist.reports.peers import jax_peer
        scale = Normalization.named("scale")
        train_set, test_set = (decode(load_mnist(synthetic_root, split), scale, CPU) for split in (True, False))
        one_epoch = jax_peer(train_set, test_set)
        assert one_epoch() > 0 and one_epoch() > 0  # two epochs: a ragged last batch, a second compiled shape

    @pytest.mark.keras
    def test_keras_on_jax_trains_in_a_process_of_its_own(self, synthetic_root):
        pytest.importorskip("jax", reason="the peers extra is not installed (make bench installs it)")
        if importlib.util.find_spec("keras") is None:  # not imported here: Keras would pick its backend
            pytest.skip("the parity extra is not installed")
        from torch_mnist import Normalization, decode, load_mnist
        from torch_mnist.reports.peers import keras_jax_peer
        scale = Normalization.named("scale")
        train_set, test_set = (decode(load_mnist(synthetic_root, split), scale, CPU) for split in (True, False))
        backend_here = os.environ.get("KERAS_BACKEND")
        peer = keras_jax_peer(train_set, test_set)
        assert peer is not None
        try:
            assert peer() > 0 and peer() > 0
            assert os.environ.get("KERAS_BACKEND") == backend_here  # only its own process runs on JAX
        finally:
            peer.close()
        assert peer._process.poll() == 0  # it ended when its input did

    def test_a_saved_run_is_reported_without_measuring(self, tmp_path, capsys):
        (tmp_path / "broken.json").write_text('{"device": "cpu"}')
        assert_one_line_error_in_process(benchmark_main, ["--report", tmp_path / "broken.json"], capsys,
                                         "not a benchmark JSON written by scripts/benchmark.py")
        assert_one_line_error_in_process(benchmark_main, ["--report", tmp_path / "none.json"], capsys,
                                         "no such file")

    @pytest.mark.compile  # the fast path's step and the update alone, compiled as make bench's are
    def test_script_writes_json(self, synthetic_root, tmp_path, capsys):
        out = tmp_path / "bench.json"
        result = run_in_process(benchmark_main, ["--data-dir", synthetic_root, "--repeats", 1, "--loader-repeats", 0,
                                                 "--variants", "--no-deployment", "--out", out], capsys)
        assert result.returncode == 0, result.stderr
        assert json.loads(out.read_text())["fast_epoch_seconds"]["median"] > 0
        assert "matmul floor" in result.stdout
        again = run_in_process(benchmark_main, ["--report", out], capsys)  # the docs' tables, from the JSON
        assert again.returncode == 0 and again.stdout.strip() == result.stdout.split("\n\nwritten:")[0].strip()
