"""CUDA layer: GPU discovery through the driver (ctypes), without torch or TensorRT."""
