"""Predictions for your own digit images: each prepared as MNIST was made (:mod:`.digits`), then read by
any model that maps 28x28 pixels to class probabilities (a checkpoint through torch, or an exported
ONNX file through onnxruntime). No torch here, so both paths share it."""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from .digits import preprocess_image
from ..errors import UserError

# uint8 images (N, 28, 28), white ink on black -> class probabilities (N, classes)
Probabilities = Callable[[np.ndarray], np.ndarray]


@dataclass
class Prediction:
    path: str
    prediction: Optional[int] = None
    top3: Optional[List[list]] = None  # [[digit, probability], ...]
    error: Optional[str] = None
    pixels: Optional[np.ndarray] = None  # the 28x28 uint8 image the model saw

    def to_dict(self) -> dict:
        result = {"path": self.path, "prediction": self.prediction, "top3": self.top3}
        if self.error is not None:
            result["error"] = self.error
        return result


def top_three(probabilities: np.ndarray) -> List[list]:
    """``[[class, probability], ...]`` of the three likeliest classes, likeliest first."""
    order = np.argsort(-probabilities, kind="stable")[:3]
    return [[int(i), round(float(probabilities[i]), 6)] for i in order]


def predict_files(paths: Sequence[Path], probabilities: Probabilities) -> List[Prediction]:
    """One :class:`Prediction` per path; an unreadable or blank image gets ``error`` instead."""
    results, readable = [], []
    for path in paths:
        try:
            results.append(Prediction(str(path), pixels=preprocess_image(Path(path))))
            readable.append(results[-1])
        except UserError as e:
            results.append(Prediction(str(path), error=str(e)))
    if readable:
        for result, row in zip(readable, probabilities(np.stack([r.pixels for r in readable]))):
            result.top3 = top_three(row)
            result.prediction = result.top3[0][0]
    return results
