"""Run by test_distributed under torchrun: scripts/train.py's main, with rank 1's loss turned NaN at its
second step, as a diverging shard would."""

import os

from torch_mnist.training import run as training
from torch_mnist.commands.common import script
from torch_mnist.commands.train import main

if os.environ.get("RANK") == "1":
    real_train_one_epoch = training.train_one_epoch

    def poisoned(model, batches, optimizer, device, *args, loss_fn, **kwargs):
        steps = []

        def nan_at_step_2(logits, labels, **options):
            steps.append(1)
            loss = loss_fn(logits, labels, **options)
            return loss * float("nan") if len(steps) == 2 else loss

        return real_train_one_epoch(model, batches, optimizer, device, *args, loss_fn=nan_at_step_2, **kwargs)

    training.train_one_epoch = poisoned

if __name__ == "__main__":
    script(main)
