"""Zoo layer: wav2vec2 on 16 kHz waveform windows, built from a config with ``transformers`` (never downloads).

The wrapper normalises each window to zero mean and unit variance (what ``Wav2Vec2FeatureExtractor`` does
for audEERING's model), runs ``Wav2Vec2Model`` and mean-pools over the window two ways: ``hidden`` (the
last hidden state, 1024-d for wav2vec2-large: audEERING's own pooled embedding) and ``extract_features``
(the convolutional encoder's output, 512-d: the width the paper states for its Wav2Vec2 feature).
"""

from __future__ import annotations

from abaw_rt.errors import require_module


def wav2vec2_config(hidden: int, layers: int, heads: int, ffn: int, conv: int, pos_kernel: int, pos_groups: int):
    """A ``Wav2Vec2Config`` of the large-robust family (stable layer norm, layer-normed conv encoder)."""
    transformers = require_module("transformers", "zoo")
    return transformers.Wav2Vec2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_dim=(conv,) * 7,
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=pos_kernel,
        num_conv_pos_embedding_groups=pos_groups,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )


def wav2vec2_pooled(config):
    """torch module: (batch, samples) float32 waveform -> (hidden (batch, H), extract_features (batch, C))."""
    import torch

    transformers = require_module("transformers", "zoo")

    class Wav2Vec2Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wav2vec2 = transformers.Wav2Vec2Model(config)

        def forward(self, waveform):
            mean = waveform.mean(dim=1, keepdim=True)
            var = ((waveform - mean) ** 2).mean(dim=1, keepdim=True)
            x = (waveform - mean) / torch.sqrt(var + 1e-7)
            out = self.wav2vec2(x)
            return out.last_hidden_state.mean(dim=1), out.extract_features.mean(dim=1)

    return Wav2Vec2Pooled()
