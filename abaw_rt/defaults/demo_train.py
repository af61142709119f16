"""Defaults layer (torch, build time): train the demo fusion model (heads VA + EXPR) on the synthetic set.

The training package (``abaw_rt.train``) trains one task per run; the demo model shares one trunk between
VA and EXPR, so this small loop sums the package's own losses (``va_loss`` 1 - CCC, ``expr_loss``
cross-entropy) over the same masked windows (``training_windows``, w = 300, s = 200), uses its schedule
(``lr_at``: linear warm-up, cosine decay) and normalisation statistics, and scores validation videos as
``abaw-rt infer`` would: full windows plus an end-aligned one (``plan_segments``), centre-weighted stitching
(``Stitcher``), the challenge metrics (``abaw_rt.train.metrics``). The best epoch by mean CCC + EXPR F1 wins.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from abaw_rt.defaults.demo_data import DemoVideo
from abaw_rt.model.config import FeatureGroup, ModelConfig
from abaw_rt.model.fusion import FusionModel
from abaw_rt.pipeline.segments import plan_segments
from abaw_rt.pipeline.stitch import Merge, Stitcher, to_probabilities
from abaw_rt.train import metrics as M
from abaw_rt.train.config import OptimSection
from abaw_rt.train.dataset import VideoSample, normalization_stats
from abaw_rt.train.schedule import lr_at
from abaw_rt.train.losses import expr_loss, va_loss
from abaw_rt.train.windows import training_windows

FEATURES = (FeatureGroup("fer", 7, "visual"), FeatureGroup("logmel", 65, "audio"))
HEADS = ("va", "expr")
# A small width of the paper's architecture (PAPER.md, "Model": causal TCN k=5, dilations 1/2/4, Transformer).
DEMO_WIDTHS = dict(
    visual_channels=(64, 64, 64),
    audio_channels=(32, 32, 32),
    d_model=64,
    n_layers=2,
    n_heads=4,
    ff_dim=128,
    head_hidden=32,
)


def demo_model_config(dropout: float = 0.1) -> ModelConfig:
    return ModelConfig(features=FEATURES, heads=HEADS, dropout=dropout, **DEMO_WIDTHS)


@dataclass(frozen=True)
class DemoTrainConfig:
    """How the demo model is trained (the script's defaults made the shipped checkpoint)."""

    epochs: int = 20  # passes over the training windows
    batch_size: int = 32  # windows per step (PAPER.md: 32 segments)
    lr: float = 1e-3  # AdamW peak; higher than the paper's 3e-5, which suits 40 M parameters, not 0.1 M
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # PAPER.md: one epoch of linear warm-up, then cosine
    dropout: float = 0.1  # small model, plentiful synthetic data: less than the paper's 0.3
    window: int = 300  # PAPER.md, "Segments"
    stride: int = 200
    expr_weight: float = 1.0  # loss = va_loss + expr_weight * expr_loss
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default


@dataclass
class DemoTrainResult:
    state: dict[str, np.ndarray]  # the best epoch's weights (float32)
    normalization: dict[str, dict[str, tuple]]
    best_epoch: int
    metrics: dict[str, float]  # the best epoch's validation metrics
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _inputs(v: DemoVideo) -> dict[str, np.ndarray]:
    return {"visual": v.fer, "audio": v.logmel}


def _batch(videos: Sequence[DemoVideo], items, device: str):
    t = max(n for _, _, n in items)
    b = len(items)
    vis = np.zeros((b, t, 7), np.float32)
    aud = np.zeros((b, t, 65), np.float32)
    va = np.full((b, t, 2), -5.0, np.float32)
    expr = np.full((b, t), -1, np.int64)
    lengths = np.zeros(b, np.int64)
    for i, (k, s, n) in enumerate(items):
        v = videos[k]
        vis[i, :n], aud[i, :n] = v.fer[s : s + n], v.logmel[s : s + n]
        va[i, :n], expr[i, :n] = v.va[s : s + n], v.expr[s : s + n]
        lengths[i] = n
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return {"visual": to(vis), "audio": to(aud)}, to(lengths), to(va), to(expr)


@torch.no_grad()
def predict(model: FusionModel, videos: Sequence[DemoVideo], window: int, stride: int, batch: int = 32,
            device: str = "cpu") -> list[dict[str, np.ndarray]]:
    """Stitched per-frame {va: values, expr: probabilities} per video, as the inference pipeline makes them."""
    was = model.training
    model.eval()
    items = [(k, s.start, s.length) for k, v in enumerate(videos) for s in plan_segments(v.frames, window, stride)]
    stitchers = [Stitcher(v.frames, {"va": 2, "expr": 8}, Merge.centre) for v in videos]
    try:
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            feats, lengths, _, _ = _batch(videos, chunk, device)
            out = {h: o.float().cpu().numpy() for h, o in model(feats, lengths).items()}
            for j, (k, s, n) in enumerate(chunk):
                stitchers[k].add(s, {h: to_probabilities(h, out[h][j, :n]) for h in HEADS})
    finally:
        model.train(was)
    return [s.result() for s in stitchers]


def evaluate(model: FusionModel, videos: Sequence[DemoVideo], cfg: DemoTrainConfig, device: str = "cpu") -> dict:
    """Challenge metrics pooled over all frames of the videos: CCC V/A, EXPR macro F1 (8 labels) and accuracy."""
    preds = predict(model, videos, cfg.window, cfg.stride, device=device)
    va_p = np.concatenate([p["va"] for p in preds])
    ex_p = np.concatenate([p["expr"] for p in preds])
    va_t = np.concatenate([v.va for v in videos])
    ex_t = np.concatenate([v.expr for v in videos])
    va = M.va_metrics(va_p, va_t)
    ex = M.expr_metrics(ex_p, ex_t)
    f1_7 = float(np.mean([ex[f"f1_{n}"] for n in ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness",
                                                  "Surprise")]))
    return {
        "ccc_valence": va["ccc_valence"],
        "ccc_arousal": va["ccc_arousal"],
        "ccc_mean": va["score"],
        "expr_f1": ex["f1"],  # macro over ABAW's 8 labels ("Other" never occurs: its F1 counts as 0)
        "expr_f1_7": f1_7,  # macro over the 7 labels that occur
        "expr_accuracy": ex["accuracy"],
        "score": va["score"] + ex["f1"],
    }


def train_demo(
    train: Sequence[DemoVideo],
    val: Sequence[DemoVideo],
    cfg: DemoTrainConfig = DemoTrainConfig(),
    report: Callable[[dict], None] | None = None,
) -> DemoTrainResult:
    """Train the demo model; on CPU the same config, data and thread count give the same weights."""
    device = "cpu"
    prev_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        mcfg = demo_model_config(cfg.dropout)
        samples = [VideoSample(v.name, v.name, None, _inputs(v), v.va, v.fps) for v in train]
        stats = normalization_stats(samples, mcfg.modalities)
        model = FusionModel(mcfg)
        model.set_normalization({m: (np.asarray(s["mean"]), np.asarray(s["std"])) for m, s in stats.items()})
        optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = OptimSection(lr=cfg.lr, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
                                epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs)
        windows = [
            (k, s, n) for k, v in enumerate(train) for s, n in training_windows(v.frames, cfg.window, cfg.stride)
        ]
        steps = math.ceil(len(windows) / cfg.batch_size)
        best, history, step = None, [], 0
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(windows))
            model.train()
            losses = []
            for b in range(steps):
                items = [windows[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                feats, lengths, va, expr = _batch(train, items, device)
                mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
                for g in optim.param_groups:
                    g["lr"] = lr_at(step, steps, schedule)
                out = model(feats, lengths)
                loss = va_loss(out["va"], va, mask) + cfg.expr_weight * expr_loss(out["expr"], expr, mask)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                step += 1
                losses.append(loss.item())
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **evaluate(model, val, cfg, device),
                   "seconds": round(time.perf_counter() - t0, 2)}
            row["best"] = best is None or row["score"] > best[1]["score"]
            if row["best"]:
                best = ({k: v.detach().float().cpu().numpy().copy() for k, v in model.state_dict().items()}, row)
            history.append(row)
            if report:
                report(row)
    finally:
        torch.set_num_threads(prev_threads)
    state, row = best
    metrics = {k: v for k, v in row.items() if k not in ("epoch", "best", "seconds", "train_loss")}
    return DemoTrainResult(state, stats, row["epoch"], metrics, history, asdict(cfg))
