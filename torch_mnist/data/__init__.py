"""Data: the datasets as data, raw idx files, torchvision datasets and normalization, batches, installing files."""
