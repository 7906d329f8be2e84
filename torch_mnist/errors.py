"""The one exception type for mistakes a user can fix (bad flag, file or data), one-line causes, and a
log line about nothing quieted."""

import contextlib
import logging
from typing import Iterator


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


def printable(text: str, limit: int = 200) -> str:
    """Text from a file (a layer's name, a class name) made safe for a terminal: control characters (escape
    sequences, newlines that could forge a line of ours) shown as their escapes, and at most ``limit``
    characters."""
    text = str(text)
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


@contextlib.contextmanager
def quiet_cuda_probe() -> Iterator[None]:
    """Inductor's CPU build looks for a CUDA toolkit, and torch logs "No CUDA runtime is found" as a warning
    on every machine with a toolkit but no GPU: a line about nothing this run uses. That logger is quieted
    while compiling, and left as it was."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)
