"""Ship a checkpoint: an ONNX file or a ``torch.export`` program that computes what the checkpoint computes.

The exported model takes raw pixels, ``image`` shaped (N, 1, 28, 28), float32 in
[0, 255] (cast uint8 pixels), with the checkpoint's normalization inside the
graph, and returns ``logits`` and ``probabilities``: a consumer needs to know
nothing about how it was trained. Every export is verified before it is
written: run on all 10,000 test images, it must agree with the checkpoint's
model in eager PyTorch on every argmax, and within 1e-5 on every probability.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..training.checkpoint import build_model, checkpoint_config, checkpoint_normalization
from ..data.mnist import Normalization, load_mnist
from ..data.registry import dataset_info
from ..errors import UserError
from ..files import staged
from ..interrupts import signals_deferred

FORMATS = ("onnx", "pt2")
PROBABILITY_TOLERANCE = 1e-5
EXPORT_HINT = "the export extra is not installed; pip install -e '.[export]'"


class Deployable(nn.Module):
    """The checkpoint's model behind its own normalization: raw pixels in, logits and probabilities out."""

    def __init__(self, model: nn.Module, normalization: Normalization):
        super().__init__()
        self.model = model.eval()
        self.standardize = normalization.name != "scale"
        self.register_buffer("mean", torch.tensor(normalization.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(normalization.std, dtype=torch.float32))

    def forward(self, image: torch.Tensor):
        x = image.float().flatten(1) / 255  # the same arithmetic, in the same order, as Normalization.apply
        if self.standardize:
            x = (x - self.mean) / self.std
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


@dataclass
class Verification:
    images: int
    argmax_agreement: int  # images on which the exported model's digit is the eager one's
    max_probability_difference: float
    test_accuracy: float  # of the exported model

    @property
    def passed(self) -> bool:
        return self.argmax_agreement == self.images and self.max_probability_difference <= PROBABILITY_TOLERANCE


def metadata(checkpoint: dict) -> Dict[str, str]:
    """What a consumer of the file needs to know, as strings (ONNX metadata is string to string)."""
    config = checkpoint_config(checkpoint)
    return {"torch_mnist_version": __version__, "dataset": config.dataset,
            "class_names": json.dumps(list(dataset_info(config.dataset).class_names)),
            "normalization": json.dumps(checkpoint_normalization(checkpoint).to_dict()),
            "architecture": json.dumps({"inputs": [1, 28, 28], "hidden": list(config.hidden), "classes": 10,
                                        "dropout": config.dropout}),
            "input": "image: float32 (N, 1, 28, 28), raw pixels in [0, 255], white ink on black (as MNIST)",
            "outputs": "logits, probabilities: float32 (N, 10)"}


def export(checkpoint: dict, data_root: Path, fmt: str, out: Path) -> Verification:
    """Export ``checkpoint`` to ``out`` as ``fmt``, verified on the test set first; nothing is written
    unless it passes. Raises :class:`UserError` naming what failed."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    runner = write_onnx if fmt == "onnx" else _pt2
    config = checkpoint_config(checkpoint)
    test = load_mnist(data_root, train=False, dataset=config.dataset)
    pixels = test.data.unsqueeze(1).float()  # (10000, 1, 28, 28) in [0, 255]
    deployable = Deployable(build_model(checkpoint), checkpoint_normalization(checkpoint)).eval()
    with staged(Path(out)) as tmp:  # written in place of `out` only once verified
        run_exported, add_metadata = runner(deployable, pixels[:2].clone(), tmp, metadata(checkpoint))
        verification = _verify(run_exported, pixels, test.targets, checkpoint)
        if not verification.passed:
            raise UserError(f"the exported model disagrees with the checkpoint: {verification.argmax_agreement} of "
                            f"{verification.images} digits agree, probabilities differ by up to "
                            f"{verification.max_probability_difference:.2e} (allowed {PROBABILITY_TOLERANCE}); "
                            "nothing was written")
        add_metadata({"test_accuracy": f"{verification.test_accuracy:.4f}"})  # as verified, into the file
    return verification


def _verify(run_exported: Callable, pixels: torch.Tensor, labels: torch.Tensor, checkpoint: dict) -> Verification:
    """The exported model against the checkpoint's model in eager PyTorch, on every test image."""
    normalization = checkpoint_normalization(checkpoint)
    model = build_model(checkpoint)
    with torch.no_grad():  # eager: the checkpoint's own path, normalization as training applied it
        eager = torch.softmax(model(decode_pixels(pixels, normalization)), dim=1).numpy()
    exported = np.concatenate([run_exported(pixels[i:i + 1000]) for i in range(0, len(pixels), 1000)])
    predicted = exported.argmax(1)
    return Verification(len(pixels), int((predicted == eager.argmax(1)).sum()),
                        float(np.abs(exported - eager).max()), float((predicted == labels.numpy()).mean()))


def decode_pixels(pixels: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    return normalization.apply(pixels.to(torch.uint8).squeeze(1)).flatten(1)


def _dynamic_batch():
    from torch.export import Dim
    return {"image": {0: Dim("batch", min=1, max=1 << 20)}}


def write_onnx(deployable: Deployable, example: torch.Tensor, path: Path, info: Dict[str, str]) -> tuple:
    """Write ``path``; return how to run it (onnxruntime) and how to add metadata to it.

    The ONNX libraries' imports and the export call back into Python from native code, where an
    interruption cannot be raised: Ctrl-C or SIGTERM takes effect when they are done (seconds)."""
    with signals_deferred():
        try:
            import onnx  # noqa: F401
            import onnxruntime
            import onnxscript  # noqa: F401  (the dynamo exporter's backend)
        except ImportError:
            raise UserError(EXPORT_HINT) from None
        program = torch.onnx.export(deployable, (example,), dynamo=True, input_names=["image"],
                                    output_names=["logits", "probabilities"], dynamic_shapes=_dynamic_batch(),
                                    verbose=False)
        program.save(str(path))
        _add_onnx_metadata(path, info)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda images: session.run(["probabilities"], {"image": images.numpy()})[0],
            lambda entries: _add_onnx_metadata(path, entries))


def _add_onnx_metadata(path: Path, entries: Dict[str, str]) -> None:
    import onnx
    model = onnx.load(str(path))
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def _pt2(deployable: Deployable, example: torch.Tensor, path: Path, info: Dict[str, str]) -> tuple:
    """Write ``path``; return how to run it (as loaded back) and how to add metadata to it."""
    program = torch.export.export(deployable, (example,), dynamic_shapes=_dynamic_batch())

    def save(entries: Dict[str, str]) -> None:
        # Through a file object: given a name, torch.export warns about any that does not end in .pt2.
        with open(path, "wb") as f:
            torch.export.save(program, f, extra_files={"torch_mnist.json": json.dumps({**info, **entries})})

    save({})
    with open(path, "rb") as f:
        loaded = torch.export.load(f).module()  # verify what a consumer will load, not what we hold

    def run(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(images)[1].numpy()
    return run, save
