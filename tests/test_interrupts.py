import os
import signal
import threading

import pytest
import torch

from torch_mnist import TrainConfig
from torch_mnist.data import distort
from torch_mnist.data.distort import Distorter
from torch_mnist.interrupts import signals_deferred, signals_kept
from torch_mnist.recipe import build
from torch_mnist.training import compiled
from torch_mnist.training.compiled import CompiledStep

# signals_deferred: Ctrl-C and SIGTERM held until the block ends
class Raised(Exception):
    pass


def _raise(signum, frame):
    raise Raised(signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_waits_for_the_end_of_the_block_then_reaches_the_handler(signum):
    signal.signal(signum, _raise)
    finished = False
    with pytest.raises(Raised) as raised:
        with signals_deferred():
            os.kill(os.getpid(), signum)
            sum(range(100_000))  # Python code after the signal: a handler would have run by now
            finished = True
    assert finished and raised.value.args == (signum,)
    assert signal.getsignal(signum) is _raise  # the handler back in place


def test_without_a_signal_the_block_changes_nothing():
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with signals_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is _raise and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    with signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_an_error_inside_the_block_still_restores_the_handlers():
    signal.signal(signal.SIGTERM, _raise)
    with pytest.raises(ValueError):
        with signals_deferred():
            raise ValueError("inside")
    assert signal.getsignal(signal.SIGTERM) is _raise


def test_outside_the_main_thread_it_changes_nothing():
    signal.signal(signal.SIGTERM, _raise)
    seen = []

    def work():
        with signals_deferred():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [_raise]


# signals_kept: delivered at once, and again at the end of the block where code inside swallowed them
def _swallow_an_interruption(signum=signal.SIGINT):
    """What torch.compile's guards do with an exception raised in one of their Python functions."""
    try:
        os.kill(os.getpid(), signum)
        sum(range(100_000))
    except BaseException:
        return "swallowed"
    return "not delivered"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_interruption_comes_out_at_the_end_of_the_block(signum):
    signal.signal(signum, _raise)
    outcomes = []
    with pytest.raises(Raised) as raised:
        with signals_kept() as kept:
            outcomes.append(kept.interrupted)
            outcomes.append(_swallow_an_interruption(signum))
            outcomes.append(kept.interrupted)
    assert outcomes == [False, "swallowed", True] and raised.value.args == (signum,)
    assert _handler_behind(signum) is _raise


def test_an_interruption_that_comes_out_is_delivered_once():
    calls = []

    def count_and_raise(signum, frame):
        calls.append(signum)
        raise Raised(signum)
    signal.signal(signal.SIGINT, count_and_raise)
    with pytest.raises(Raised):
        with signals_kept():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(100_000))
    assert calls == [signal.SIGINT]


def test_an_interruption_turned_into_another_error_comes_out_as_itself():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt) as raised:
        with signals_kept():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(100_000))
            except KeyboardInterrupt as e:
                raise RuntimeError("backend compiler failed") from e
    assert isinstance(raised.value.__context__, RuntimeError)  # what the code made of it, kept for a report


def test_a_handler_that_does_not_raise_is_not_called_twice():
    calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    with signals_kept() as kept:
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(100_000))
    assert calls == [signal.SIGTERM] and not kept.interrupted


def test_without_a_signal_kept_changes_nothing_and_errors_pass():
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with pytest.raises(ValueError):
        with signals_kept():
            os.kill(os.getpid(), signal.SIGINT)  # ignored, as under nohup: it stays ignored
            raise ValueError("inside")
    assert _handler_behind(signal.SIGTERM) is _raise and signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def _handler_behind(signum):
    """The handler a signal reaches: the one installed, or the one signals_kept's relay calls."""
    handler = signal.getsignal(signum)
    return getattr(handler, "handler", handler)


def test_the_relay_is_installed_once_and_a_later_handler_is_wrapped_in_turn():
    signal.signal(signal.SIGINT, _raise)
    with signals_kept():
        pass
    relay = signal.getsignal(signal.SIGINT)
    with signals_kept():
        pass
    assert signal.getsignal(signal.SIGINT) is relay and relay.handler is _raise  # not wrapped twice
    calls = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))  # the user's own, set later
    with signals_kept() as kept:
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(100_000))
    assert calls == [signal.SIGINT] and not kept.interrupted


# The compiled callers: an interruption that torch's guards swallow still stops the run
def _swallowing_graph(real_call, swallow_on_call):
    calls = []

    def run(*args):
        calls.append(1)
        if len(calls) == swallow_on_call:
            _swallow_an_interruption()
        return real_call(*args)
    return run


@pytest.mark.parametrize("swallow_on_call", [1, 2], ids=["while compiling", "a compiled call"])
def test_the_compiled_step_loses_no_interruption(monkeypatch, swallow_on_call):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(compiled, "_new_compiled_step", lambda: _swallowing_graph(compiled._step, swallow_on_call))
    recipe = build(TrainConfig(), torch.device("cpu"))
    step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn)
    images, labels = torch.rand(128, 784), torch.randint(0, 10, (128,))
    if swallow_on_call == 2:
        step(images, labels)
    with pytest.raises(KeyboardInterrupt):
        step(images, labels)
    assert step.implementation == "compiled"


def test_an_interruption_inside_the_compiler_is_not_taken_for_a_compiler_failure(monkeypatch):
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def compiler_wraps_it(*args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(100_000))
        except KeyboardInterrupt as e:
            raise RuntimeError("InductorError: interrupted") from e
    monkeypatch.setattr(compiled, "_new_compiled_step", lambda: compiler_wraps_it)
    recipe = build(TrainConfig(), torch.device("cpu"))
    step = CompiledStep(recipe.model, recipe.optimizer, recipe.loss_fn)
    with pytest.raises(KeyboardInterrupt):
        step(torch.rand(128, 784), torch.randint(0, 10, (128,)))
    assert step.implementation == "compiled"  # no note, no eager fallback: the run was stopped


@pytest.mark.parametrize("swallow_on_call", [1, 2], ids=["while compiling", "a compiled call"])
def test_the_distorter_loses_no_interruption(monkeypatch, swallow_on_call):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(distort, "compiled", lambda graph: _swallowing_graph(graph, swallow_on_call))
    images = torch.rand(16, 784)
    distorter = Distorter(images, ("affine",))
    rows, generator = torch.arange(16), torch.Generator().manual_seed(0)
    if swallow_on_call == 2:
        distorter(rows, generator)
    with pytest.raises(KeyboardInterrupt):
        distorter(rows, generator)


def test_nothing_is_kept_once_the_blocks_end():
    from torch_mnist import interrupts

    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with signals_kept():
            with signals_kept():
                _swallow_an_interruption()
    with pytest.raises(KeyboardInterrupt):  # a relay outside any block passes the signal on, keeping nothing
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(100_000))
    assert interrupts._raised == [] and interrupts._open_blocks == 0
