"""A run's history in the shape of Keras' ``History.history``, and how its figures are printed."""

from typing import Dict, List, Optional

History = Dict[str, List[float]]
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def new_history() -> History:
    """An empty history in the shape of Keras' ``History.history``."""
    return {key: [] for key in HISTORY_KEYS}


def record_epoch(history: History, train: Dict[str, float], val: Dict[str, float]) -> Dict[str, float]:
    """Append one epoch's training and validation figures; return them under the history's keys."""
    figures = {**train, **{"val_" + key: value for key, value in val.items()}}
    for key in HISTORY_KEYS:
        history[key].append(figures[key])
    return {key: figures[key] for key in HISTORY_KEYS}


def format_figure(value: Optional[float]) -> str:
    """Four decimals, or three significant digits for the small late-epoch losses; ``-`` if not logged."""
    if value is None:
        return "-"
    return f"{value:.4f}" if value >= 0.01 else f"{value:.3g}"
