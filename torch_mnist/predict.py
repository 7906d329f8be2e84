"""Predictions for your own digit images: preprocessed as MNIST was made (:mod:`.digits`), then the model."""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from .data import Normalization
from .digits import preprocess_image
from .errors import UserError


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


@torch.no_grad()
def predict_pixels(model: torch.nn.Module, pixels: np.ndarray, normalization: Normalization,
                   device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Class probabilities (N, 10) for uint8 images shaped (N, 28, 28)."""
    images = normalization.apply(torch.from_numpy(np.ascontiguousarray(pixels))).flatten(1).to(device)
    model.eval()
    return torch.softmax(model(images), dim=1).cpu()


def predict_files(model: torch.nn.Module, paths: Sequence[Path], normalization: Normalization,
                  device: torch.device = torch.device("cpu")) -> List[Prediction]:
    """One :class:`Prediction` per path; an unreadable or blank image gets ``error`` instead."""
    results, readable = [], []
    for path in paths:
        try:
            results.append(Prediction(str(path), pixels=preprocess_image(Path(path))))
            readable.append(results[-1])
        except UserError as e:
            results.append(Prediction(str(path), error=str(e)))
    if readable:
        probabilities = predict_pixels(model, np.stack([r.pixels for r in readable]), normalization, device)
        for result, row in zip(readable, probabilities):
            top = torch.topk(row, 3)
            result.prediction = int(top.indices[0])
            result.top3 = [[int(i), round(float(p), 6)] for p, i in zip(top.values, top.indices)]
    return results
