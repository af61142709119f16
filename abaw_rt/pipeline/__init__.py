"""Pipeline layer: whole-video inference (decode -> faces -> features -> segments -> stitch -> outputs).

One module per stage; PyAV, onnxruntime, Pillow and matplotlib are imported inside the functions that
use them, so importing this package stays light.
"""
