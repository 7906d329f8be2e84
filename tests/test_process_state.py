"""The library leaves its caller's process as it found it: random streams, flush-denormal, umask, the
model's mode, sockets' default timeout (a notebook calls these functions between its own work)."""

import os
import socket

import numpy as np
import pytest
import torch

from torch_mnist import MLP, Normalization, TrainConfig, run_training
from torch_mnist.training.epoch import predict_probabilities
from torch_mnist.files import atomic_write
from torch_mnist.training.runtime import fast_cpu_math, flushes_denormals

CPU = torch.device("cpu")


def test_run_training_keeps_the_callers_random_stream(synthetic_root, tmp_path):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    run_training(TrainConfig(epochs=1, dropout=0.2, hidden=(16,)), synthetic_root, CPU, tmp_path / "c.pt")
    assert torch.equal(torch.rand(3), expected)


def test_a_resume_keeps_the_callers_random_stream_and_still_resumes_bit_for_bit(synthetic_root, tmp_path):
    from torch_mnist import load_checkpoint
    config = TrainConfig(epochs=2, dropout=0.2, hidden=(16,))
    run_training(config, synthetic_root, CPU, tmp_path / "one_go.pt")
    run_training(TrainConfig(epochs=1, dropout=0.2, hidden=(16,)), synthetic_root, CPU, tmp_path / "half.pt")
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    run_training(config, synthetic_root, CPU, tmp_path / "half.pt", resume=load_checkpoint(tmp_path / "half.pt"))
    assert torch.equal(torch.rand(3), expected)
    one_go, resumed = load_checkpoint(tmp_path / "one_go.pt"), load_checkpoint(tmp_path / "half.pt")
    assert all(torch.equal(one_go["model_state"][k], resumed["model_state"][k]) for k in one_go["model_state"])


def test_predict_probabilities_leaves_a_training_model_training():
    model = MLP(hidden=8).train()
    predict_probabilities(model, Normalization.named("scale"), np.zeros((2, 28, 28), np.uint8))
    assert model.training


@pytest.mark.parametrize("before", [False, True])
def test_fast_cpu_math_restores_the_callers_flush_denormal_setting(before):
    if not torch.set_flush_denormal(before) and before:
        pytest.skip("this CPU cannot flush denormals")
    try:
        with fast_cpu_math(CPU):
            pass
        assert flushes_denormals() == before
    finally:
        torch.set_flush_denormal(False)


def test_atomic_writes_never_touch_the_umask(tmp_path, monkeypatch):
    def refuse(mask):
        raise AssertionError("os.umask called: it changes the whole process's file permissions")
    monkeypatch.setattr(os, "umask", refuse)
    atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_a_download_leaves_the_default_socket_timeout_alone(tmp_path, monkeypatch):
    from torch_mnist.data.mnist import load_mnist
    from torch_mnist.errors import UserError
    seen = []
    original = socket.getdefaulttimeout()

    def urlopen(url, timeout=None):
        seen.append((timeout, socket.getdefaulttimeout()))
        raise OSError("no network in tests")
    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    with pytest.raises(UserError, match="download failed"):
        load_mnist(tmp_path / "nowhere", train=True)
    assert seen and all(timeout and default == original for timeout, default in seen)
    assert socket.getdefaulttimeout() == original
    assert not (tmp_path / "nowhere").exists()  # no empty folders left behind
