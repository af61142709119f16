"""Model layer (torch-free part): the frozen ModelConfig, the paper's feature presets, and the I/O specs they imply."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from abaw_rt.errors import AbawRtError
from abaw_rt.specs import BATCH, TIME, TensorSpec

MODALITIES = ("visual", "audio")

# Per-frame outputs of each task head and their label names (Zhou et al. 2023, the ABAW5 task definitions).
HEAD_LABELS: dict[str, tuple[str, ...]] = {
    "va": ("valence", "arousal"),
    "expr": ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"),
    "au": ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26"),
}
HEADS = tuple(HEAD_LABELS)

LENGTHS = "lengths"  # name of the per-segment valid-length input


@dataclass(frozen=True)
class FeatureGroup:
    """One extractor's per-frame feature vector, as the model consumes it."""

    name: str  # extractor name, e.g. "eff" (HSEmotion EfficientNet-B2); matches the extractor spec
    dim: int  # length of its per-frame vector
    modality: str  # "visual" or "audio": which TCN branch (and which model input) it feeds


@dataclass(frozen=True)
class ModelConfig:
    """The paper's architecture (Zhou et al. 2023, method: TCN, fusion, Transformer), defaults from the authors' code (upczww/abaw5)."""

    features: tuple[FeatureGroup, ...]  # in input order: a modality's input is its groups concatenated
    heads: tuple[str, ...] = ("va",)  # any subset of "va", "expr", "au"; one shared trunk
    visual_channels: tuple[int, ...] = (1024, 512, 256)  # visual TCN block widths (authors: 'emotion' branch)
    audio_channels: tuple[int, ...] = (512, 256, 128)  # audio TCN block widths
    kernel_size: int = 5  # TCN kernel (authors: 5)
    dilations: tuple[int, ...] = (1, 2, 4)  # one per TCN block (authors: 2**i)
    causal: bool = True  # causal convolutions: the TCN carries order, no positional encoding needed
    d_model: int = 512  # 1x1 projection of the concatenated branches, Transformer width
    n_layers: int = 8  # Transformer encoder layers
    n_heads: int = 4  # attention heads
    ff_dim: int = 512  # feed-forward width (authors' TransEncoder sets it equal to d_model)
    head_hidden: int = 256  # hidden width of each task head's MLP
    dropout: float = 0.3  # TCN, attention and head dropout (training only)
    # Each frame attends only to frames within +-attention_band of it, in every layer (ours, not the paper's:
    # None, the paper's choice, attends over the whole window). With a causal TCN an output then depends on at
    # most n_layers * attention_band later frames (``future_frames``), so live with that much lookahead sees all
    # that offline sees after a frame. Masks scores; the graph still computes the whole T x T product.
    attention_band: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.features:
            problems.append("features: at least one feature group is needed")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            problems.append(f"features: duplicate names in {names}")
        for f in self.features:
            if f.modality not in MODALITIES:
                problems.append(f"feature '{f.name}': modality {f.modality!r}, expected one of {MODALITIES}")
            if f.dim < 1:
                problems.append(f"feature '{f.name}': dim {f.dim}, expected >= 1")
        if not self.heads or any(h not in HEADS for h in self.heads) or len(set(self.heads)) != len(self.heads):
            problems.append(f"heads: got {self.heads}, expected a non-empty subset of {HEADS}")
        for name in ("visual_channels", "audio_channels"):
            ch = getattr(self, name)
            if len(ch) != len(self.dilations) or any(c < 1 for c in ch):
                problems.append(f"{name}: got {ch}, expected {len(self.dilations)} positive widths (one per dilation)")
        if self.d_model % self.n_heads:
            problems.append(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.kernel_size < 1 or self.n_layers < 0 or not 0.0 <= self.dropout < 1.0:
            problems.append("kernel_size >= 1, n_layers >= 0 and 0 <= dropout < 1 are required")
        band = self.attention_band
        if band is not None and (isinstance(band, bool) or not isinstance(band, int) or band < 1):
            problems.append(f"attention_band: got {band!r}, expected an integer >= 1 or None (the whole window)")
        if problems:
            raise AbawRtError("invalid model config: " + "; ".join(problems))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present, in canonical order (visual, audio)."""
        present = {f.modality for f in self.features}
        return tuple(m for m in MODALITIES if m in present)

    @property
    def future_frames(self) -> int | None:
        """How many later frames an output frame can depend on; None: any frame of its window (unbounded).

        The TCN reaches no later frame when causal (half of each convolution's span when not), and each
        Transformer layer attention_band more; attention over the whole window (band None) is unbounded.
        """
        spans = [(self.kernel_size - 1) * d for d in self.dilations]
        tcn = 0 if self.causal else sum(2 * (s - s // 2) for s in spans)  # two convolutions per block
        if self.n_layers == 0:
            return tcn
        if self.attention_band is None:
            return None
        return tcn + self.n_layers * self.attention_band

    def modality_dim(self, modality: str) -> int:
        return sum(f.dim for f in self.features if f.modality == modality)

    def channels(self, modality: str) -> tuple[int, ...]:
        return self.visual_channels if modality == "visual" else self.audio_channels

    # -- interface, derived once for export, runners and engine profiles --------------------------
    def input_specs(self) -> tuple[TensorSpec, ...]:
        specs = [TensorSpec(m, "float32", (BATCH, TIME, self.modality_dim(m))) for m in self.modalities]
        specs.append(TensorSpec(LENGTHS, "int64", (BATCH,), value_range=(1, TIME)))
        return tuple(specs)

    def output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(h, "float32", (BATCH, TIME, len(HEAD_LABELS[h]))) for h in self.heads)

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelConfig":
        try:
            kw = dict(d)
            kw["features"] = tuple(FeatureGroup(**f) for f in kw["features"])
            for key in ("heads", "visual_channels", "audio_channels", "dilations"):
                if key in kw:
                    kw[key] = tuple(kw[key])
            return cls(**kw)
        except (TypeError, KeyError) as exc:
            raise AbawRtError(f"invalid model config: {exc}") from None

    def replace(self, **changes) -> "ModelConfig":
        return ModelConfig.from_dict({**self.to_dict(), **changes})


# The extractors of Zhou et al. 2023, features.
PAPER_FEATURES: dict[str, FeatureGroup] = {
    "eff": FeatureGroup("eff", 1280, "visual"),  # HSEmotion EfficientNet-B2 (AffectNet-8)
    "affectnet8": FeatureGroup("affectnet8", 512, "visual"),  # DAN, AffectNet 8 classes
    "rafdb": FeatureGroup("rafdb", 512, "visual"),  # DAN, RAF-DB
    "arcface": FeatureGroup("arcface", 512, "visual"),  # insightface ArcFace (Glint360K)
    "wav2vec2": FeatureGroup("wav2vec2", 512, "audio"),  # audeering wav2vec 2.0 (dimensional SER)
}

# The best feature set per task (Zhou et al. 2023, best feature set per task).
PRESET_FEATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # preset: (feature names, heads)
    "va": (("eff", "affectnet8", "rafdb", "wav2vec2"), ("va",)),
    "va_arcface": (("eff", "affectnet8", "rafdb", "arcface", "wav2vec2"), ("va",)),
    "expr": (("eff", "affectnet8"), ("expr",)),
    "au": (("eff", "affectnet8", "rafdb"), ("au",)),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A ModelConfig for one of the paper's feature sets (``va``, ``va_arcface``, ``expr``, ``au``)."""
    if name not in PRESET_FEATURES:
        raise AbawRtError(f"unknown preset {name!r}; expected one of {sorted(PRESET_FEATURES)}")
    feats, heads = PRESET_FEATURES[name]
    base = dict(features=tuple(PAPER_FEATURES[f] for f in feats), heads=heads)
    base.update(overrides)
    return ModelConfig(**base)


# A small width of the same architecture: fast enough for tests, CI and the CPU demo.
TINY = dict(
    visual_channels=(32, 32, 32),
    audio_channels=(16, 16, 16),
    d_model=32,
    n_layers=2,
    n_heads=4,
    ff_dim=64,
    head_hidden=16,
)


def flops_per_frame(cfg: ModelConfig, time: int) -> float:
    """Analytic forward FLOPs per frame (a multiply-add counts 2) for segments of ``time`` frames.

    Counts convolutions, projections, feed-forward and heads, plus the attention products
    (Q K^T and A V, 2 * time * d_model each per layer), which torch's FlopCounterMode misses.
    Elementwise work (activations, norms, softmax) is left out: it is small and not matmul-bound.
    An ``attention_band`` changes nothing here: it masks scores, and the graph still computes all T x T of them.
    """
    flops = 0.0
    for m in cfg.modalities:
        c_in = cfg.modality_dim(m)
        for c_out in cfg.channels(m):
            flops += 2 * cfg.kernel_size * c_in * c_out  # conv1
            flops += 2 * cfg.kernel_size * c_out * c_out  # conv2
            if c_in != c_out:
                flops += 2 * c_in * c_out  # 1x1 residual projection
            c_in = c_out
    concat = sum(cfg.channels(m)[-1] for m in cfg.modalities)
    d = cfg.d_model
    flops += 2 * concat * d
    per_layer = 2 * 4 * d * d + 2 * 2 * d * cfg.ff_dim + 2 * 2 * time * d
    flops += cfg.n_layers * per_layer
    for h in cfg.heads:
        flops += 2 * d * cfg.head_hidden + 2 * cfg.head_hidden * len(HEAD_LABELS[h])
    return flops


def parameter_count(cfg: ModelConfig) -> int:
    """Analytic parameter count (matches FusionModel's trainable parameters)."""
    n = 0
    for m in cfg.modalities:
        c_in = cfg.modality_dim(m)
        for c_out in cfg.channels(m):
            n += cfg.kernel_size * c_in * c_out + c_out
            n += cfg.kernel_size * c_out * c_out + c_out
            if c_in != c_out:
                n += c_in * c_out + c_out
            n += 3  # three PReLU slopes per block (authors' TemporalBlock)
            c_in = c_out
    concat = sum(cfg.channels(m)[-1] for m in cfg.modalities)
    d = cfg.d_model
    n += concat * d + d
    n += cfg.n_layers * (4 * d * d + 4 * d + d * cfg.ff_dim + cfg.ff_dim + cfg.ff_dim * d + d + 4 * d)
    for h in cfg.heads:
        n += d * cfg.head_hidden + cfg.head_hidden + cfg.head_hidden * len(HEAD_LABELS[h]) + len(HEAD_LABELS[h])
    return n
