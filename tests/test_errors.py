import logging

import torch

from torch_mnist.data import distort
from torch_mnist.data.distort import Distorter
from torch_mnist.errors import one_line, printable, quiet_cuda_probe
from torch_mnist.training import compiled
from torch_mnist.training.compiled import CompiledStep
from torch_mnist.recipe import build
from torch_mnist import TrainConfig

PROBE_LOGGER = "torch.utils.cpp_extension"


def test_one_line_is_the_first_line_with_text_or_the_type():
    assert one_line(RuntimeError("\n  first \nsecond")) == "first"
    assert one_line(RuntimeError("a\nb"), line=1) == "b"
    assert one_line(ValueError("")) == "ValueError"


def test_printable_escapes_control_characters_and_bounds_the_length():
    assert printable("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert printable("x" * 300, limit=10) == "x" * 10 + "..."


def _probe_logs(*args):
    logging.getLogger(PROBE_LOGGER).warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    return args


def test_the_cuda_probe_line_is_quieted_while_compiling_and_the_level_restored(caplog):
    logger = logging.getLogger(PROBE_LOGGER)
    before = logger.level
    with quiet_cuda_probe():
        _probe_logs()
    assert logger.level == before and not caplog.records
    _probe_logs()
    assert len(caplog.records) == 1  # outside the block it is logged as ever


def test_both_compiled_callers_quiet_it(caplog, monkeypatch):
    def fake_step():
        def run(*args):
            _probe_logs()
            return compiled._step(*args)
        return run
    monkeypatch.setattr(compiled, "_new_compiled_step", fake_step)
    recipe = build(TrainConfig(), torch.device("cpu"))
    CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn)(torch.rand(8, 784), torch.randint(0, 10, (8,)))
    monkeypatch.setattr(distort, "compiled", lambda graph: lambda *args: graph(*_probe_logs(*args)))
    Distorter(torch.rand(4, 784), ("affine",))(torch.arange(4), torch.Generator().manual_seed(0))
    assert not caplog.records
