"""Quantisation layer: INT8 (static QDQ) and FP16 graphs whose precision is chosen by the task metric.

``calib`` reads calibration and held-aside data, ``qdq`` and ``fp16`` lower a graph with some nodes kept
high, ``drift`` measures task-level drift against a budget, ``sensitivity`` ranks nodes, ``search`` bisects
how many to keep high and ``report`` writes the result. ``abaw-rt quantize`` (abaw_rt.cli.quant_cmds) drives it.
"""
