"""Graph layer: reading and checking ONNX files (self-describing metadata, external data, fp16 placement).

Imports no torch and no runtime: every layer that opens an ONNX file reads it through here.
"""
