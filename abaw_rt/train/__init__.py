"""Training layer: recipes, ABAW annotations, windows, losses, metrics, the training loop and cross-validation.

Torch-free at import: ``config``, ``annotations``, ``dataset``, ``windows``, ``metrics`` and ``synthetic`` use
numpy only; ``losses``, ``loop`` and ``crossval`` import torch.
"""
