"""Training layer: the demo fusion model's recipe (heads VA + EXPR) and its synthetic data as a run's ``TrainData``.

The demo model (``abaw_rt/defaults/demo.safetensors``) is trained by ``scripts/train_demo_model.py`` through the
same ``train()`` as ``abaw-rt train``: one run, two heads on one trunk, the VA loss (1 - CCC) and the EXPR
cross-entropy summed, validation on stitched predictions, the best epoch by CCC mean + EXPR macro F1.
The data are ``abaw_rt.defaults.demo_data``'s sequences in the default extractors' feature space.
"""

from __future__ import annotations

from typing import Sequence

from abaw_rt.defaults.demo_data import DemoVideo
from abaw_rt.train.config import DataSection, ModelSection, OptimSection, RunSection, TrainConfig, WindowSection
from abaw_rt.train.data import TrainData
from abaw_rt.train.dataset import VideoSample
from abaw_rt.vocab import Device, ModelSize, Task

EXTRACTORS = {"fer": {"dim": 7, "modality": "visual"}, "logmel": {"dim": 65, "modality": "audio"}}
# A small width of the paper's architecture (Zhou et al. 2023, "Model": causal TCN k=5, dilations 1/2/4, Transformer).
DEMO_WIDTHS = dict(
    visual_channels=(64, 64, 64),
    audio_channels=(32, 32, 32),
    d_model=64,
    n_layers=2,
    n_heads=4,
    ff_dim=128,
    head_hidden=32,
)
# Attention reaches +-25 frames (1 s at 25 fps) in each of the 2 layers, so an output depends on at most 50 later
# frames (ModelConfig.future_frames): at lookahead 50 (2 s) live sees all that offline sees after a frame. Whole-window
# attention (the paper's) made the demo's arousal depend on more than 2 s of future (README, "Model card").
DEMO_ATTENTION_BAND = 25


def demo_recipe(
    epochs: int = 20,
    seed: int = 0,
    threads: int = 0,
    batch_size: int = 32,  # Zhou et al. 2023: 32 segments
    lr: float = 1e-3,  # higher than the paper's 3e-5, which suits 40 M parameters, not 0.1 M
    window: int = 300,  # Zhou et al. 2023, "Segments"
    stride: int = 200,
    attention_band: int | None = DEMO_ATTENTION_BAND,  # None: attention over the whole window (the paper's)
) -> TrainConfig:
    """The demo model's training run (the script's defaults made the shipped checkpoint's settings)."""
    arch = dict(DEMO_WIDTHS) if attention_band is None else {**DEMO_WIDTHS, "attention_band": attention_band}
    return TrainConfig(
        task=Task.va,
        extra_tasks=(Task.expr,),
        model=ModelSection(
            features=tuple(EXTRACTORS),
            size=ModelSize.paper,
            dropout=0.1,  # small model, plentiful synthetic data: less than the paper's 0.3
            arch=tuple(sorted(arch.items())),
        ),
        data=DataSection(root="", annotations="synthetic (abaw_rt.defaults.demo_data)"),
        windows=WindowSection(window=window, stride=stride),
        optim=OptimSection(lr=lr, weight_decay=1e-4, batch_size=batch_size, epochs=epochs, warmup_epochs=1.0),
        run=RunSection(seed=seed, device=Device.cpu, threads=threads),
        name="demo",
    )


def demo_sample(v: DemoVideo) -> VideoSample:
    """One synthetic sequence as a training sample: fer -> visual, logmel -> audio; VA target, EXPR beside it."""
    inputs = {"visual": v.fer, "audio": v.logmel}
    return VideoSample(v.name, v.name, None, inputs, v.va, v.fps, other_targets={"expr": v.expr})


def demo_data(train: Sequence[DemoVideo], val: Sequence[DemoVideo]) -> TrainData:
    return TrainData([demo_sample(v) for v in train], [demo_sample(v) for v in val], dict(EXTRACTORS))
