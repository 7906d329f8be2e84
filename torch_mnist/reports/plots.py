"""Pictures of a run: learning curves beside the reference, confusion matrix, seed bands.

matplotlib is an optional extra (``pip install -e .[plot]``); without it each
function raises :class:`PlotsUnavailable` saying so, and training is unaffected.
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .analysis import confusion_matrix
from ..files import atomic_write
from ..errors import UserError
from .reference import reference_history

INSTALL_HINT = "matplotlib is not installed; pip install -e '.[plot]' to get the plots"


class PlotsUnavailable(UserError):
    """matplotlib is missing: training carries on without plots, plot.py stops with this line."""


def plots_paths(run: Path, folder: Optional[Path] = None) -> Tuple[Path, Path]:
    """Where a run's pictures go, named after it: ``run.pt`` or ``run.json`` -> ``run.curves.png`` and
    ``run.confusion.png``, beside it unless ``folder`` says otherwise (two runs never share a picture)."""
    run = Path(run)
    folder = Path(folder) if folder is not None else run.parent
    return folder / f"{run.stem}.curves.png", folder / f"{run.stem}.confusion.png"


def write_run_plots(history: Dict[str, list], predicted: torch.Tensor, labels: torch.Tensor, names: List[str],
                    curves: Path, confusion: Path, with_reference: bool = True) -> str:
    """A run's curves and its last validation's confusion matrix; returns the line that says where.

    Raises :class:`PlotsUnavailable` without matplotlib.
    """
    plot_curves(history, curves, with_reference)
    plot_confusion(confusion_matrix(predicted, labels), names, confusion)
    return f"plots: {curves}, {confusion}"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path: Path) -> None:
    atomic_write(Path(path), lambda f: figure.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _reference_line(axis, values: list, epochs: range, label: str, style: str) -> None:
    points = [(e, v) for e, v in zip(epochs, values) if v is not None]  # epoch 16's val was cut off
    axis.plot([e for e, _ in points], [v for _, v in points], style, color="grey", label=label)


def plot_curves(history: Dict[str, list], path: Path, with_reference: bool = True) -> None:
    """Loss and accuracy per epoch, training and validation, with the reference's logged run (MNIST's).

    Every point is on the chart: accuracy on a log-odds axis, which spreads 0.88, 0.98
    and 0.9998 evenly (an accuracy of exactly 1 sits at the top edge).
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    reference = reference_history()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    ours = range(1, len(history["loss"]) + 1)
    theirs = range(1, len(reference["loss"]) + 1)
    for axis, metric in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
        axis.plot(ours, history[metric], "o-", color="tab:blue", label=f"training {metric}")
        axis.plot(ours, history["val_" + metric], "o-", color="tab:orange", label=f"validation {metric}")
        if with_reference:
            _reference_line(axis, reference[metric], theirs, f"reference training {metric}", "--")
            _reference_line(axis, reference["val_" + metric], theirs, f"reference validation {metric}", ":")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    loss_axis.set_yscale("log")  # training loss spans three decades
    _log_odds_axis(accuracy_axis, [v for line in accuracy_axis.get_lines() for v in line.get_ydata()])
    figure.suptitle("torch_mnist vs the reference Keras run" if with_reference else "torch_mnist")
    _save(figure, path)
    plt.close(figure)


ACCURACY_TICKS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 0.99999)


def _log_odds_axis(axis, values: List[float]) -> None:
    """Accuracy on a log-odds axis spanning every value below 1 (a 1 sits on the top edge), plain ticks."""
    from matplotlib.ticker import FixedLocator, NullLocator, StrMethodFormatter

    below_one = [v for v in values if 0 < v < 1] or [0.5, 0.99]
    odds = [np.log(v / (1 - v)) for v in (min(below_one), max(below_one))]
    margin = 0.08 * (odds[1] - odds[0]) + 0.1
    low, high = (1 / (1 + np.exp(-x)) for x in (odds[0] - margin, odds[1] + margin))
    axis.set_yscale("logit", nonpositive="clip")
    axis.set_ylim(low, high)
    axis.yaxis.set_major_locator(FixedLocator([t for t in ACCURACY_TICKS if low <= t <= high]))
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.yaxis.set_minor_locator(NullLocator())


def plot_confusion(matrix: np.ndarray, class_names: List[str], path: Path) -> None:
    """The confusion matrix as a heat map with counts (log colour scale: the diagonal dominates)."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(matrix + 1, cmap="Blues", norm=LogNorm())
    for (t, p), count in np.ndenumerate(matrix):
        if count:
            axis.text(p, t, str(count), ha="center", va="center", fontsize=7,
                      color="white" if t == p else "black")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45)
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.colorbar(image, ax=axis, label="count + 1")
    _save(figure, path)
    plt.close(figure)


def plot_seed_band(summary: Dict[str, Dict[str, list]], path: Path) -> None:
    """Mean ± std over seeds for each metric, with the reference's figures overlaid."""
    plt = _pyplot()
    reference = reference_history()
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for axis, metric in zip(axes, ("loss", "accuracy", "val_loss", "val_accuracy")):
        mean, std = np.array(summary[metric]["mean"]), np.array(summary[metric]["std"])
        epochs = np.arange(1, len(mean) + 1)
        axis.fill_between(epochs, mean - std, mean + std, alpha=0.3, label="ours, mean ± std")
        axis.plot(epochs, mean, color="tab:blue")
        _reference_line(axis, reference[metric], range(1, 21), "reference", "o")
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if metric == "loss":  # training loss spans three decades
            axis.set_yscale("log")
    axes[0].legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)
