"""Build layer: ONNX -> TensorRT engine (profiles, recipes, sidecars, version gates). Imports no framework.

``tensorrt`` is imported only by ``abaw_rt.build.engine`` and ``abaw_rt.runners.trt_runner``, and only
after ``abaw_rt.build.gpu`` has found a CUDA device (the lean runtime segfaults without one).
"""
