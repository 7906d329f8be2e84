"""Reading digits with an exported ONNX model and onnxruntime: no torch anywhere on this path.

With :mod:`.digits` (Pillow and numpy) this is all a machine needs to read
digit images with a model that ``scripts/export.py`` wrote.
"""

import json
import threading
import time
from pathlib import Path
from typing import List

import numpy as np

from ..errors import UserError, printable
from ..interrupts import signals_deferred

NUM_CLASSES = 10  # every model export.py writes reads ten classes
RUN_SECONDS, RUN_SECONDS_PER_IMAGE = 30.0, 0.01  # a run's deadline: far beyond what an MLP needs
INSTALL_HINT = "onnxruntime is not installed; pip install onnxruntime (or pip install -e '.[export]')"


class OnnxDigitReader:
    """An exported torch_mnist model, checked to be one: ``image`` (N, 1, 28, 28) in, probabilities out."""

    def __init__(self, path: Path):
        try:
            with signals_deferred():  # a native import (see signals_deferred)
                import onnxruntime
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such model file")
        try:
            with signals_deferred():  # a handler's exception inside onnxruntime's native code would abort
                self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = [(i.name, i.shape[1:]) for i in self.session.get_inputs()]
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if "torch_mnist_version" not in meta or inputs != [("image", [1, 28, 28])] or "probabilities" not in outputs:
            raise UserError(f"{path}: an ONNX model, but not one exported by torch_mnist (scripts/export.py)")
        self.path = path
        self.class_names: List[str] = _class_names(meta.get("class_names"), path)
        shape = outputs["probabilities"]
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(self.class_names)):
            raise UserError(f"{path}: its probabilities are shaped {shape}, not one per class for "
                            f"{len(self.class_names)} classes")

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10) for uint8 images shaped (N, 28, 28), white ink on black."""
        images = np.ascontiguousarray(pixels, dtype=np.float32)[:, None]
        probabilities = self._run({"image": images}, len(images))
        if probabilities.shape != (len(images), len(self.class_names)) or not np.isfinite(probabilities).all():
            raise UserError(f"{self.path}: the model gave probabilities shaped {list(probabilities.shape)}, "
                            f"not {len(images)} rows of {len(self.class_names)} finite figures")
        return probabilities

    def _run(self, feeds: dict, count: int) -> np.ndarray:
        """The session's run in a thread of its own, under a deadline, and ended by Ctrl-C or SIGTERM: a graph
        can loop without end (an ONNX Loop with no trip count), and onnxruntime's C++ would never return to
        let a signal handler run. Its RunOptions' terminate flag stops it between operators."""
        import onnxruntime

        options, outcome, done = onnxruntime.RunOptions(), {}, threading.Event()
        options.log_severity_level = 4  # onnxruntime's own log lines (a terminated run's among them): fatal only

        def work():
            try:
                outcome["probabilities"] = self.session.run(["probabilities"], feeds, options)[0]
            except Exception as e:  # onnxruntime's own error types, a terminated run's among them
                outcome["error"] = e
            finally:
                done.set()

        # Waited on through an Event, not Thread.join: a signal's exception inside join can leave Python
        # believing the thread has ended while onnxruntime still runs in it (and exiting then aborts).
        deadline = time.monotonic() + RUN_SECONDS + RUN_SECONDS_PER_IMAGE * count
        threading.Thread(target=work, name="onnxruntime", daemon=True).start()
        try:
            while not done.wait(0.05):  # short waits, so that a signal's handler runs in this thread meanwhile
                if time.monotonic() > deadline:
                    options.terminate = True
                    done.wait()
                    raise UserError(f"{self.path}: the model ran past its deadline ({RUN_SECONDS:.0f} s and more); "
                                    "an exported MLP reads an image in well under a millisecond")
        except BaseException:  # Ctrl-C, SIGTERM: the run stops between operators, and ends before we do
            options.terminate = True
            done.wait(10)
            raise
        if "error" in outcome:
            raise UserError(f"{self.path}: the model failed on these images "
                            f"({type(outcome['error']).__name__})") from None
        return outcome["probabilities"]


def _class_names(text, path: Path) -> List[str]:
    """The metadata's class names: a JSON list of ten non-empty strings, as export.py writes it."""
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        names = None
    if not isinstance(names, list) or len(names) != NUM_CLASSES or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"{path}: its class names are missing or unreadable (expected a JSON list of "
                        f"{NUM_CLASSES} names)")
    return [printable(name, 40) for name in names]  # they reach a terminal: no escape codes, no line breaks
