"""Shipping a model: verified ONNX and torch.export files, the drawing page and its HTTP API."""
