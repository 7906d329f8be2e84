"""Ctrl-C and SIGTERM around code that must not be cut short, or that would lose them.

Python runs a signal's handler in the main thread between two bytecodes, wherever that thread is; the
handler's exception (KeyboardInterrupt) is raised there. Two kinds of code suffer from that:

* code that must finish once begun (a ``torch.save``, a native library's callback): :func:`signals_deferred`
  holds the signals until the block ends;
* code that catches every exception on its own path and carries on. torch.compile's guards, which decide
  before each call whether a compiled graph still fits its inputs, call Python functions (functorch's state,
  the saved-tensor hooks) and take an exception there for "does not fit": a Ctrl-C landing in one (a few
  percent of those during a training step) is gone, and the graph is compiled again or, under
  ``skip_guard_eval_unsafe``, refused with a RuntimeError. :class:`signals_kept` delivers such a signal again
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


class _Relay:
    """A handler that calls the one it wraps, and remembers what that handler raised."""

    def __init__(self, handler: Callable):
        self.handler = handler

    def __call__(self, signum, frame):
        try:
            self.handler(signum, frame)
        except BaseException as error:
            if _open_blocks:  # kept only while a block may need it: an exception holds its frames
                _raised.append((signum, error))
            raise


_raised: List[Tuple[int, BaseException]] = []  # (signal, exception) a relay's handler raised in an open block
_open_blocks = 0


class signals_kept:
    """``with signals_kept() as kept:`` a Ctrl-C or SIGTERM acts at once, as usual; if the exception its
    handler raised does not come out of the block (code inside caught it, or raised another error in its
    place), the signal is delivered again as the block ends. ``kept.interrupted`` says whether one came.

    For compiled calls, which may swallow an interruption in a guard and which must not wait (a call that
    compiles takes tens of seconds). The handlers are wrapped in a relay once, not at every block (a
    training step is a few milliseconds: swapping handlers around each one cost more than the step's
    bookkeeping); the relay calls the handler it wraps, and a handler installed later is wrapped the
    next time a block begins. In other threads, where no handler runs, it does nothing.
    """

    def __enter__(self) -> "signals_kept":
        global _open_blocks
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            for sig in SIGNALS:
                handler = signal.getsignal(sig)
                # SIG_IGN stays ignored; SIG_DFL ends the process, and nothing can swallow that
                if callable(handler) and not isinstance(handler, _Relay):
                    signal.signal(sig, _Relay(handler))
            _open_blocks += 1
        self._first = len(_raised)
        return self

    @property
    def interrupted(self) -> bool:
        return len(_raised) > self._first

    def __exit__(self, kind, error, traceback) -> bool:
        global _open_blocks
        if not self._main:
            return False
        raised = _raised[self._first:]
        del _raised[self._first:]  # handled here: it came out, or it is delivered again now
        _open_blocks -= 1
        if raised and not any(escaped is error for _, escaped in raised):
            signal.raise_signal(raised[0][0])  # the relay's handler raises it again, out of the block
        return False
