"""Test-set detail: per-class accuracy, confusion matrix, a grid of mistakes."""

from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..files import atomic_write

GRID_CELL = 56  # each misclassified digit drawn at 2x, with room for its caption


def confusion_matrix(predicted: torch.Tensor, true: torch.Tensor, num_classes: int = 10) -> np.ndarray:
    """``matrix[t, p]`` counts images of true class t predicted as p."""
    flat = true * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray) -> List[float]:
    """Recall of each class: the diagonal over the row sums."""
    totals = matrix.sum(axis=1)
    return [float(matrix[c, c] / totals[c]) if totals[c] else float("nan") for c in range(len(matrix))]


def format_confusion(matrix: np.ndarray, class_names: List[str]) -> str:
    """Per-class accuracy and the confusion matrix as aligned text (rows: true, columns: predicted)."""
    accuracy = per_class_accuracy(matrix)
    width = max(6, max(len(name) for name in class_names) + 1)
    lines = ["per-class accuracy:"]
    lines += [f"  {name:>{width}}: {acc:.4f}  ({matrix[c].sum()} images)"
              for c, (name, acc) in enumerate(zip(class_names, accuracy))]
    lines.append("confusion matrix (rows: true class, columns: predicted):")
    lines.append(" " * (width + 2) + "".join(f"{name:>{width}}" for name in class_names))
    for name, row in zip(class_names, matrix):
        lines.append(f"  {name:>{width}}" + "".join(f"{count:>{width}}" for count in row))
    return "\n".join(lines)


def misclassified_grid(pixels: np.ndarray, true: torch.Tensor, predicted: torch.Tensor, path: Path,
                       columns: int = 10, limit: int = 100) -> int:
    """Write a PNG grid of wrongly classified images captioned ``true->predicted``; return how many."""
    wrong = torch.nonzero(true != predicted).flatten()[:limit].tolist()
    rows = max(1, -(-len(wrong) // columns))
    grid = Image.new("L", (columns * GRID_CELL, rows * (GRID_CELL + 12)), 0)
    draw = ImageDraw.Draw(grid)
    for k, index in enumerate(wrong):
        x, y = (k % columns) * GRID_CELL, (k // columns) * (GRID_CELL + 12)
        grid.paste(Image.fromarray(pixels[index]).resize((GRID_CELL, GRID_CELL)), (x, y))
        draw.text((x + 4, y + GRID_CELL), f"{int(true[index])}->{int(predicted[index])}", fill=255)
    atomic_write(path, lambda f: grid.save(f, format="PNG"))
    return len(wrong)
