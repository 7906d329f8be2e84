"""Export a checkpoint to ONNX or torch.export: python scripts/export.py --checkpoint ckpt.pt --format onnx."""

from torch_mnist.commands.common import script
from torch_mnist.commands.export import main

if __name__ == "__main__":
    script(main)
