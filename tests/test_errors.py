import os
import signal
import threading

import pytest

from torch_mnist.errors import interruptions_deferred


class Raised(Exception):
    pass


def _raise(signum, frame):
    raise Raised(signum)


@pytest.fixture
def handlers():
    """SIGINT and SIGTERM as each test sets them, put back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_waits_for_the_end_of_the_block_then_reaches_the_handler(handlers, signum):
    signal.signal(signum, _raise)
    finished = False
    with pytest.raises(Raised) as raised:
        with interruptions_deferred():
            os.kill(os.getpid(), signum)
            sum(range(100_000))  # Python code after the signal: a handler would have run by now
            finished = True
    assert finished and raised.value.args == (signum,)
    assert signal.getsignal(signum) is _raise  # the handler back in place


def test_without_a_signal_the_block_changes_nothing(handlers):
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with interruptions_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is _raise and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    with interruptions_deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_an_error_inside_the_block_still_restores_the_handlers(handlers):
    signal.signal(signal.SIGTERM, _raise)
    with pytest.raises(ValueError):
        with interruptions_deferred():
            raise ValueError("inside")
    assert signal.getsignal(signal.SIGTERM) is _raise


def test_outside_the_main_thread_it_changes_nothing(handlers):
    signal.signal(signal.SIGTERM, _raise)
    seen = []

    def work():
        with interruptions_deferred():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [_raise]
