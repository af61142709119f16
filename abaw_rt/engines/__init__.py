"""Engine build layer: ONNX -> TensorRT engine plan + sidecar (build steps, recipes). Imports no framework."""
