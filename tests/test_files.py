import os
import signal
import threading

import pytest

from torch_mnist.files import atomic_write, signals_deferred


class TestAtomicWrite:
    def test_failed_write_leaves_previous_file_intact(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        path.write_bytes(b"previous complete checkpoint")

        def crash_half_way(f):
            f.write(b"half of a new chec")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, crash_half_way)
        assert path.read_bytes() == b"previous complete checkpoint"
        assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind

    def test_ctrl_c_during_a_write_waits_for_it_to_complete(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        path.write_bytes(b"previous")

        def interrupted_half_way(f):
            f.write(b"new first half, ")
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-write
            f.write(b"new second half")

        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, interrupted_half_way)
        assert path.read_bytes() == b"new first half, new second half"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    def test_a_link_planted_at_a_predictable_temporary_name_is_not_followed(self, tmp_path):
        # In a shared folder, someone may plant links where a naive writer would put its temporary file.
        victim = tmp_path / "victim"
        victim.write_bytes(b"someone else's file")
        path = tmp_path / "ckpt.pt"
        for pid in range(os.getpid() - 5, os.getpid() + 5):
            (tmp_path / f".ckpt.pt.{pid}.tmp").symlink_to(victim)
        atomic_write(path, lambda f: f.write(b"checkpoint"))
        assert path.read_bytes() == b"checkpoint" and not path.is_symlink()
        assert victim.read_bytes() == b"someone else's file"

    def test_the_new_file_gets_the_usual_permissions(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        atomic_write(path, lambda f: f.write(b"x"))
        mask = os.umask(0)
        os.umask(mask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# signals_deferred: Ctrl-C and SIGTERM held until the block ends
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
        with signals_deferred():
            os.kill(os.getpid(), signum)
            sum(range(100_000))  # Python code after the signal: a handler would have run by now
            finished = True
    assert finished and raised.value.args == (signum,)
    assert signal.getsignal(signum) is _raise  # the handler back in place


def test_without_a_signal_the_block_changes_nothing(handlers):
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with signals_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is _raise and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
    with signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_an_error_inside_the_block_still_restores_the_handlers(handlers):
    signal.signal(signal.SIGTERM, _raise)
    with pytest.raises(ValueError):
        with signals_deferred():
            raise ValueError("inside")
    assert signal.getsignal(signal.SIGTERM) is _raise


def test_outside_the_main_thread_it_changes_nothing(handlers):
    signal.signal(signal.SIGTERM, _raise)
    seen = []

    def work():
        with signals_deferred():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [_raise]
