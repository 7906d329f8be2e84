"""Ctrl-C and SIGTERM around code that must not be cut short, or that would lose them.

Python runs a signal's handler in the main thread between two bytecodes, wherever that thread is; the
handler's exception (KeyboardInterrupt) is raised there. Two kinds of code suffer from that:

* code that must finish once begun (a ``torch.save``, a native library's callback): :func:`signals_deferred`
  holds the signals until the block ends;
* code that catches every exception on its own path and carries on. torch.compile's guards, which decide
  before each call whether a compiled graph still fits its inputs, call Python functions (functorch's state,
  the saved-tensor hooks) and take an exception there for "does not fit": a Ctrl-C landing in one (a few
  percent of those during a training step) is gone, and the graph is compiled again or, under
  ``skip_guard_eval_unsafe``, refused with a RuntimeError. :func:`signals_kept` delivers such a signal again
  when the block ends.

Only the main thread can install handlers: elsewhere both do nothing. A signal the process ignores
(``nohup``, ``&`` in a script) stays ignored.
"""

import contextlib
import signal
import threading
from typing import Callable, Iterator, List, Tuple

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them as usual.

    An exception raised inside ``torch.save`` can leave its zip writer broken
    and raising errors of its own; deferring keeps a write whole. Native code
    that calls back into Python (the ONNX libraries' imports and export) can
    end the process with a C++ ``terminate`` (exit -6) when a handler raises
    inside such a callback; deferring lets the interruption arrive after it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])  # now handled by the restored handler


@contextlib.contextmanager
def signals_kept() -> Iterator[List[Tuple[int, BaseException]]]:
    """Deliver Ctrl-C and SIGTERM at once, as usual, and once more when the block ends if the exception their
    handler raised did not come out of it (code inside caught it, or raised another error in its place).

    For long calls that may swallow an interruption (a torch.compile call that compiles: tens of seconds
    that a Ctrl-C should cut short), where :func:`signals_deferred` would make the user wait. The block
    is given the list of (signal, exception) its handlers raised so far, to tell an error of the code's
    own from one an interruption caused.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    raised: List[Tuple[int, BaseException]] = []  # (signal, what its handler raised)
    previous = {}
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if callable(handler):  # SIG_IGN stays ignored; SIG_DFL ends the process, and nothing can swallow that
            previous[sig] = signal.signal(sig, _relay(handler, raised))
    escaped = None
    try:
        yield raised
    except BaseException as error:
        escaped = error
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if raised and not any(error is escaped for _, error in raised):
            signal.raise_signal(raised[0][0])  # the restored handler raises it again, out of the block


def _relay(handler: Callable, raised: List[Tuple[int, BaseException]]) -> Callable:
    def relay(signum, frame):
        try:
            handler(signum, frame)
        except BaseException as error:
            raised.append((signum, error))
            raise
    return relay
