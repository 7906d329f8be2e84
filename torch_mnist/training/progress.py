"""Keras-style progress lines, drawn with tqdm in a terminal and plain in a log."""

import contextlib
import os
import shutil
import sys
import time
from typing import Dict, Iterator, Optional, TextIO

from tqdm import tqdm

REFRESH_SECONDS = 0.2  # how often a terminal bar redraws (and the device is read)

Metrics = Dict[str, float]


def format_metrics(metrics: Metrics) -> str:
    """``loss: 0.0687 - accuracy: 0.9793``, Keras' way of printing metrics."""
    return " - ".join(f"{name}: {value:.4f}" for name, value in metrics.items())


class Progress:
    """Prints ``Epoch 3/20`` then ``469/469 [====] - 2s 4ms/step - loss: ...``.

    ``mode``: "bar" (a live tqdm bar; for terminals), "lines" (one line per
    epoch, no carriage returns; for log files) or "quiet" (nothing). The
    default "auto" picks "bar" when the stream is a terminal.
    """

    def __init__(self, mode: str = "auto", stream: Optional[TextIO] = None):
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self._bar: Optional[tqdm] = None
        self._last_refresh = 0.0

    @contextlib.contextmanager
    def epoch(self, epoch: int, epochs: int, steps: int) -> Iterator[None]:
        """Show the epoch's progress; an epoch interrupted inside leaves no half-drawn bar behind."""
        self.start_epoch(epoch, epochs, steps)
        try:
            yield
        except BaseException:
            self.close()
            raise

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._start = time.perf_counter()
        self._steps = steps
        if self.mode == "quiet":
            return
        self._print(f"Epoch {epoch}/{epochs}")
        if self.mode == "bar":
            # Some pseudo-terminals report 0 x 0: tqdm would then trim every line to nothing and hide
            # the bar as "below the screen". Give it the size shutil settles on, or a sane one.
            size = shutil.get_terminal_size(fallback=(120, 24))
            self._bar = tqdm(total=steps, file=self.stream, ascii=".=", leave=True, ncols=size.columns or 120,
                             nrows=size.lines or 24, bar_format="{n_fmt}/{total_fmt} [{bar:30}] - {elapsed}{desc}")
            self._last_refresh = time.perf_counter()

    def due(self) -> bool:
        """Whether the bar wants fresh numbers now (reading them may sync the device)."""
        return self._bar is not None and time.perf_counter() - self._last_refresh >= REFRESH_SECONDS

    def show(self, step: int, metrics: Metrics) -> None:
        """Redraw the bar at ``step`` with the running figures (call when :meth:`due`)."""
        if self._bar is None:
            return
        self._bar.n = step
        shown = {key: metrics[key] for key in ("loss", "accuracy") if key in metrics}
        self._bar.set_description_str(f" - {format_metrics(shown)}", refresh=False)
        self._bar.refresh()
        self._last_refresh = time.perf_counter()

    def end_epoch(self, metrics: Metrics) -> None:
        seconds = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.leave = False  # the live bar gives way to the full summary line below
            self._bar.close()
            self._bar = None
        if self.mode != "quiet":  # printed whole: tqdm would trim it to the terminal's width
            self._print(f"{self._steps}/{self._steps} [{'=' * 30}] - {seconds:.0f}s "
                        f"{1000 * seconds / self._steps:.0f}ms/step - {format_metrics(metrics)}")

    def _print(self, line: str) -> None:
        """A line of progress; a reader that has gone (``train.py | head``) leaves the run to go on quietly,
        to its checkpoint, with everything printed later going nowhere."""
        try:
            print(line, file=self.stream, flush=True)
        except BrokenPipeError:
            self.mode = "quiet"
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass

    def close(self) -> None:
        """Close a bar left open by an interrupted epoch."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
