"""Export layer: PyTorch checkpoint -> ONNX graph with dynamic batch and time (needs torch)."""
