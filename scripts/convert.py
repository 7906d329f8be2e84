"""Convert between Keras and torch_mnist: python scripts/convert.py --from-keras model.keras --out ckpt.pt."""

from torch_mnist.commands.common import script
from torch_mnist.commands.convert import main

if __name__ == "__main__":
    script(main)
