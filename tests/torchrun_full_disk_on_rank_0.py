"""Run by test_distributed under torchrun: scripts/train.py's main, with rank 0's disk full at its first
checkpoint write, while rank 1 would go on to the next epoch's collectives."""

import errno
import os

from torch_mnist.training import run as training
from torch_mnist.commands.common import script
from torch_mnist.commands.train import main

if os.environ.get("RANK") == "0":
    def full_disk(checkpoint, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    training.save_checkpoint = full_disk

if __name__ == "__main__":
    script(main)
