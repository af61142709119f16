"""Model layer: the fusion model's config (torch-free) and, in ``abaw_rt.model.fusion``, its torch module."""

from abaw_rt.model.config import (
    HEAD_LABELS,
    HEADS,
    LENGTHS,
    MODALITIES,
    PAPER_FEATURES,
    PRESET_FEATURES,
    TINY,
    FeatureGroup,
    ModelConfig,
    flops_per_frame,
    parameter_count,
    preset,
)

__all__ = [
    "HEAD_LABELS",
    "HEADS",
    "LENGTHS",
    "MODALITIES",
    "PAPER_FEATURES",
    "PRESET_FEATURES",
    "TINY",
    "FeatureGroup",
    "ModelConfig",
    "flops_per_frame",
    "parameter_count",
    "preset",
]
