"""TensorRT runtime layer: version gates, optimisation profiles, engine sidecars. Imports no framework.

``tensorrt`` is imported only by ``abaw_rt.trt.compat.import_tensorrt`` and only after
``abaw_rt.cuda.gpu`` has found a CUDA device (the lean runtime segfaults without one).
"""
