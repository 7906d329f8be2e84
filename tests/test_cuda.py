"""The CUDA paths; skipped on machines without a GPU (run them where one is lent)."""

import pytest
import torch

from torch_mnist import TrainConfig, build_model, load_checkpoint, resolve_device, run_training

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_picks_cuda():
    assert resolve_device("auto").type == "cuda"


def test_cuda_run_follows_the_cpu_run(synthetic_root, tmp_path):
    cpu = run_training(TrainConfig(epochs=2), synthetic_root, torch.device("cpu"), tmp_path / "cpu.pt").history
    gpu = run_training(TrainConfig(epochs=2), synthetic_root, torch.device("cuda"), tmp_path / "gpu.pt").history
    for key in cpu:  # same batches and arithmetic; only the kernels' rounding differs
        assert gpu[key] == pytest.approx(cpu[key], abs=2e-3)


def test_cuda_checkpoint_loads_on_cpu(synthetic_root, tmp_path):
    run_training(TrainConfig(epochs=1), synthetic_root, torch.device("cuda"), tmp_path / "gpu.pt")
    model = build_model(load_checkpoint(tmp_path / "gpu.pt"))
    assert next(model.parameters()).device.type == "cpu"


def test_non_finite_loss_is_caught_on_cuda(synthetic_root, tmp_path):
    from torch_mnist.training.epoch import NonFiniteLossError
    with pytest.raises(NonFiniteLossError, match="epoch 1, step"):
        run_training(TrainConfig(epochs=1, lr=1e20), synthetic_root, torch.device("cuda"), tmp_path / "c.pt")


@pytest.mark.compile
def test_compiled_bf16_run_learns_on_cuda(synthetic_root, tmp_path):
    # The compiled step on CUDA needs Triton (shipped with the CUDA wheels); bf16 autocast runs on tensor cores.
    config = TrainConfig(epochs=2, compile=True, amp="bf16")
    history = run_training(config, synthetic_root, torch.device("cuda"), tmp_path / "fast.pt").history
    assert history["val_accuracy"][-1] > 0.9
    assert load_checkpoint(tmp_path / "fast.pt")["config"]["amp"] == "bf16"


def test_distorted_run_on_cuda_resumes_bit_for_bit(synthetic_root, tmp_path):
    # The distortions draw from a generator of the device, seeded per epoch: a resume redraws the same digits.
    options = dict(distort=("affine", "elastic", "pen"), lr_schedule="cosine", compile=False)
    cuda = torch.device("cuda")
    one_go = run_training(TrainConfig(epochs=2, **options), synthetic_root, cuda, tmp_path / "one.pt").history
    run_training(TrainConfig(epochs=1, **options), synthetic_root, cuda, tmp_path / "split.pt")
    from torch_mnist.training.run import resume_config
    checkpoint = load_checkpoint(tmp_path / "split.pt")
    resumed = run_training(resume_config(checkpoint, 2), synthetic_root, cuda, tmp_path / "split.pt",
                           resume=checkpoint).history
    assert resumed == one_go and one_go["val_accuracy"][-1] > 0.5
