"""Runner layer: OnnxModelRunner, any ONNX graph (face detector, feature extractor) through the Runner API.

``OrtRunner`` runs graphs made by ``abaw-rt export`` and reads their abaw-rt metadata; the pipeline's
detectors and extractors are third-party graphs without it, so their specs come from the session's own
inputs and outputs: fixed sizes stay fixed, unnamed dynamic axes get a per-position name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.runners.base import Runner
from abaw_rt.runners.ort_runner import PROVIDERS, open_session
from abaw_rt.specs import TensorSpec

# onnxruntime's type strings -> numpy dtype names.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class GraphMetadata:
    """What a third-party graph says about itself (onnxruntime's model metadata), read when it is activated."""

    producer: str = ""  # e.g. "pytorch", "tf2onnx"
    graph_name: str = ""
    version: int = 0  # the model's own version field
    custom: Mapping[str, str] = field(default_factory=dict)  # metadata_props, as the file has them


class OnnxModelRunner(Runner):
    """Runs any ONNX graph with onnxruntime; its specs are read from the session when it is activated.

    Outputs come back as float32 where the graph gives float16/float64 (integer outputs unchanged).

    Args:
        path: the ``.onnx`` file.
        provider: "cpu", "cuda" or "tensorrt".
        threads: intra-op threads (None: onnxruntime's default, one per core).
        what: how error messages name the graph (e.g. "extractor 'eff'").
        spin: let idle intra-op threads spin between calls (onnxruntime's default). Off by default
            here: in the pipeline, graphs take turns with the decoder, and spinning threads steal its cores.
    """

    name = "onnx"

    def __init__(
        self,
        path: Path | str,
        provider: str = "cpu",
        threads: int | None = None,
        what: str = "ONNX",
        spin: bool = False,
    ):
        super().__init__()
        self.spin = spin
        self.path = Path(path)
        self.what = what
        if not self.path.is_file():
            raise AbawRtError(f"{what} '{self.path}': no such file")
        from abaw_rt.graphs.safety import check_external_data

        check_external_data(self.path)  # weights outside its folder (../../): refused (older onnxruntime loaded them)
        if provider not in PROVIDERS:
            raise AbawRtError(f"provider {provider!r}: expected one of {sorted(PROVIDERS)}")
        self.provider = provider
        self.threads = threads
        self.session = None
        self.input_specs = ()
        self.output_specs = ()
        self.metadata = GraphMetadata()  # filled from the session on activation

    def _activate(self) -> None:
        self.session = open_session(self.path, self.provider, None, self.threads, spin=self.spin, what=self.what)
        meta = self.session.get_modelmeta()
        self.metadata = GraphMetadata(meta.producer_name, meta.graph_name, meta.version,
                                      dict(meta.custom_metadata_map))  # fmt: skip
        self.input_specs = tuple(_spec(node) for node in self.session.get_inputs())
        self.output_specs = tuple(_spec(node) for node in self.session.get_outputs())
        self._output_names = [s.name for s in self.output_specs]

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._output_names, dict(feeds))
        except Exception as exc:
            raise AbawRtError(f"{self.what} '{self.path}': onnxruntime failed ({str(exc).splitlines()[0]})") from None
        return {
            k: v.astype(np.float32) if v.dtype in (np.float16, np.float64) else v
            for k, v in zip(self._output_names, outs)
        }

    def _describe(self) -> dict:
        return {"provider": self.provider, "threads": self.threads, "producer": self.metadata.producer}

    def spec(self, name: str | None, kind: str) -> TensorSpec:
        """The input (kind="input") or output spec called ``name``; None picks the graph's only one."""
        specs = self.input_specs if kind == "input" else self.output_specs
        if name is None or name == "":
            if len(specs) != 1:
                raise AbawRtError(
                    f"{self.what} '{self.path}': has {kind}s {[s.name for s in specs]}; name the one to use in the spec"
                )
            return specs[0]
        for s in specs:
            if s.name == name:
                return s
        raise AbawRtError(f"{self.what} '{self.path}': no {kind} '{name}' (graph has {[s.name for s in specs]})")

    def example_feeds(self, batch: int, time: int, rng: np.random.Generator | None = None, padded: bool = False):
        """Random feeds for the graph: symbolic axes take ``batch`` for the first axis, ``time`` elsewhere."""
        rng = rng if rng is not None else np.random.default_rng(0)
        feeds = {}
        for s in self.input_specs:
            shape = [d if isinstance(d, int) else (batch if i == 0 else time) for i, d in enumerate(s.shape)]
            feeds[s.name] = rng.standard_normal(shape).astype(s.dtype)
        return feeds


def _spec(node) -> TensorSpec:
    dtype = ORT_DTYPES.get(node.type)
    if dtype is None:
        raise AbawRtError(f"ONNX tensor '{node.name}': type {node.type} is not supported by the pipeline")
    shape = tuple(
        d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else f"{node.name}_dim{i}")
        for i, d in enumerate(node.shape)
    )
    return TensorSpec(node.name, dtype, shape)
