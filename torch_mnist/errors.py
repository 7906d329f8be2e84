"""The one exception type for mistakes a user can fix (bad flag, file or data), one-line causes, and
interruptions held back while native code runs."""

import contextlib
import signal
import threading
from typing import Iterator, List


class UserError(Exception):
    """A problem caused by the user's input, with a message saying what to do.

    Scripts print the message as one line on stderr and exit with code 2;
    library callers can catch it like any other exception.
    """


class Note(UserWarning):
    """Something a user should know that does not stop the work (scripts print it as ``note: ...``)."""


def one_line(error: BaseException, line: int = 0) -> str:
    """A short cause for a message of ours: one line (the first, or ``line``) of a foreign error's text."""
    lines = [text for text in str(error).strip().splitlines() if text.strip()]
    return lines[line].strip() if lines else type(error).__name__


@contextlib.contextmanager
def interruptions_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM noted, not acted on, until the block ends; then the first one goes to the handler
    that was installed (ours raises, at a point where Python code can take the exception).

    For native code that calls back into Python (an extension's import, an ONNX export): an exception
    raised by a signal handler inside such a callback can end the process with a C++ ``terminate`` (exit
    -6) instead of a clean "interrupted". Outside the main thread, where handlers cannot be changed, it
    changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: List[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: noted.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:
            signal.raise_signal(noted[0])  # as it arrived, to the handler now back in place
