"""Training and checkpoints: one epoch, the run, checkpoints and their digest, progress, logs, devices."""
