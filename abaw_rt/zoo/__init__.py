"""Zoo layer (just below the CLI): the paper's feature extractors as first-class models.

Reference architectures in plain torch (EfficientNet-B2 as HSEmotion ships it, DAN, ArcFace IResNet,
wav2vec2 through ``transformers``) exported to ONNX with seeded random weights and the public checkpoints'
inputs, outputs and preprocessing; recipes for the users' real files; fp16 graphs, verify and bench per
extractor; analytic cost of the paper's whole system. torch/transformers are imported only where needed.
"""
