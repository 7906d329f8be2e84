"""Reading digits with an exported ONNX model and onnxruntime: no torch anywhere on this path.

With :mod:`.digits` (Pillow and numpy) this is all a machine needs to read
digit images with a model that ``scripts/export.py`` wrote.
"""

import json
from pathlib import Path
from typing import List

import numpy as np

from .errors import UserError

INSTALL_HINT = "onnxruntime is not installed; pip install onnxruntime (or pip install -e '.[export]')"


class OnnxDigitReader:
    """An exported torch_mnist model, checked to be one: ``image`` (N, 1, 28, 28) in, probabilities out."""

    def __init__(self, path: Path):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = [(i.name, i.shape[1:]) for i in self.session.get_inputs()]
        outputs = {o.name for o in self.session.get_outputs()}
        if "torch_mnist_version" not in meta or inputs != [("image", [1, 28, 28])] or "probabilities" not in outputs:
            raise UserError(f"{path}: an ONNX model, but not one exported by torch_mnist (scripts/export.py)")
        try:
            self.class_names: List[str] = json.loads(meta["class_names"])
        except (KeyError, ValueError):
            raise UserError(f"{path}: its class names are missing or unreadable") from None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for uint8 images shaped (N, 28, 28), white ink on black."""
        images = np.ascontiguousarray(pixels, dtype=np.float32)[:, None]
        return self.session.run(["probabilities"], {"image": images})[0]
