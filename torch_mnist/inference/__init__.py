"""Reading your own digits, torch-free: where the ink is, the 28x28 input, predictions, ONNX models."""
