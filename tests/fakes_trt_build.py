"""Fakes of TensorRT's Builder, INetworkDefinition, OnnxParser, IBuilderConfig and optimisation profiles.

The build-side companion of tests/fakes_trt.py (the runtime side): they implement exactly the calls
``abaw_rt.engines.builder`` makes, per TensorRT major version, and check the contract the real builder
enforces (by an error, or by silently building something else); a breach raises ``ContractError``:

- the parser parsed the graph into the network before the build; every network input has a shape
  (min <= opt <= max) in every profile; profiles and flags are added before the build, not after;
- TensorRT 11 has no FP16 / INT8 / OBEY_PRECISION_CONSTRAINTS builder flags and no per-layer
  ``precision`` / ``set_output_type`` (its module and layers lack them, as the real bindings do);
- TensorRT 10: a strongly typed network takes no precision flags and no per-layer constraints; a
  per-layer constraint without OBEY/PREFER_PRECISION_CONSTRAINTS would be ignored; the INT8 flag needs
  Q/DQ layers (explicit quantisation; there is no calibrator), and Q/DQ layers need the INT8 flag.

The network is read from the ONNX file with ``onnx``: one layer per node (named after it), typed by op.
The serialised engine is the JSON plan that tests/fakes_trt.py's runtime loads, so a fake build runs.
"""

from __future__ import annotations

import json
import types
from enum import IntEnum

from tests.fakes_trt import DTYPES, ContractError, FakeCuda, FakeLogger, fake_tensorrt

LAYER_TYPES = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "ReduceMean": "REDUCE",
               "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "MatMul": "MATRIX_MULTIPLY"}  # fmt: skip
LayerType = IntEnum("LayerType", sorted(set(LAYER_TYPES.values())) + ["OTHER"])
NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", [("STRONGLY_TYPED", 5)])
MemoryPoolType = IntEnum("MemoryPoolType", ["WORKSPACE"])
FLAGS = {10: ["TF32", "FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"], 11: ["TF32"]}
PRECISION_FLAGS = {"FP16", "INT8"}


class _Tensor:
    def __init__(self, name: str, dtype: str, shape: list):
        self.name, self.dtype, self.shape = name, dtype, shape


class FakeLayer:
    def __init__(self, node):
        self.name = node.name
        self.type = LayerType[LAYER_TYPES.get(node.op_type, "OTHER")]
        self.num_outputs = len(node.output)


class FakeLayer10(FakeLayer):
    """TensorRT 10's layer: per-layer precision and output types (gone in 11)."""

    def __init__(self, node):
        super().__init__(node)
        self.precision = None
        self.output_types: dict[int, object] = {}

    def set_output_type(self, index: int, dtype) -> None:
        if not 0 <= index < self.num_outputs:
            raise ContractError(f"layer '{self.name}': set_output_type({index}) of {self.num_outputs} outputs")
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, builder: "FakeBuilder", flags: int):
        self.builder, self.flags = builder, flags
        self.strongly_typed = builder.major >= 11 or bool(flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []
        self.layers: list[FakeLayer] = []
        self.parsed = False

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self.layers[i]


def _tensor(vi) -> _Tensor:
    names = {1: "float32", 10: "float16", 6: "int32", 7: "int64"}
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
    return _Tensor(vi.name, names.get(vi.type.tensor_type.elem_type, "float32"), dims)


class _ParserError:
    def __init__(self, text: str):
        self.text = text

    def desc(self) -> str:
        return self.text


class FakeOnnxParser:
    def __init__(self, network: FakeNetwork, logger):
        if not isinstance(logger, FakeLogger):
            raise ContractError("trt.OnnxParser needs a trt.Logger")
        self.network, self.errors = network, []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> _ParserError:
        return self.errors[i]

    def parse_from_file(self, path: str) -> bool:
        import onnx

        try:
            model = onnx.load(path)
        except Exception as exc:
            self.errors.append(_ParserError(f"cannot read {path}: {exc}"))
            return False
        layer = FakeLayer10 if self.network.builder.major == 10 else FakeLayer
        inits = {i.name for i in model.graph.initializer}
        self.network.inputs = [_tensor(vi) for vi in model.graph.input if vi.name not in inits]
        self.network.outputs = [_tensor(vi) for vi in model.graph.output]
        self.network.layers = [layer(n) for n in model.graph.node]
        self.network.parsed = True
        return True


class FakeProfile:
    def __init__(self):
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        lo, opt, hi = (tuple(int(d) for d in s) for s in (lo, opt, hi))
        if not (len(lo) == len(opt) == len(hi)) or any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ContractError(f"profile shape of '{name}': expected min <= opt <= max, got {lo}, {opt}, {hi}")
        self.shapes[name] = (lo, opt, hi)


class _TimingCache:
    def __init__(self, blob: bytes, gpu: str):
        self.blob, self.gpu = bytes(blob), gpu

    def serialize(self) -> bytes:
        return f"fake-timing-cache:{self.gpu}".encode()


class FakeConfig:
    def __init__(self, builder: "FakeBuilder"):
        self.builder = builder
        self.flags: set[str] = {"TF32"}  # TensorRT's default
        self.profiles: list[FakeProfile] = []
        self.pool_limits: dict = {}
        self.builder_optimization_level = 3
        self.cache: _TimingCache | None = None
        self.built = False

    def _check_open(self, what: str) -> None:
        if self.built:
            raise ContractError(f"{what} after build_serialized_network: it does not change the built engine")

    def set_flag(self, flag) -> None:
        self._check_open(f"set_flag({flag.name})")
        self.flags.add(flag.name)

    def clear_flag(self, flag) -> None:
        self.flags.discard(flag.name)

    def set_memory_pool_limit(self, pool, nbytes: int) -> None:
        self.pool_limits[pool.name] = nbytes

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        self._check_open("add_optimization_profile")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> _TimingCache:
        return _TimingCache(blob, self.builder.gpu)

    def set_timing_cache(self, cache: _TimingCache, ignore_mismatch: bool) -> bool:
        if cache.blob and cache.blob != f"fake-timing-cache:{self.builder.gpu}".encode() and not ignore_mismatch:
            return False  # another GPU's or version's cache
        self.cache = cache
        return True

    def get_timing_cache(self) -> _TimingCache:
        return self.cache


class FakeBuilder:
    def __init__(self, logger, major: int, gpu: str):
        if not isinstance(logger, FakeLogger):
            raise ContractError("trt.Builder needs a trt.Logger")
        self.major, self.gpu = major, gpu
        self.networks: list[FakeNetwork] = []
        self.configs: list[FakeConfig] = []
        self.built: list[dict] = []  # what each build was given (for the tests' assertions)

    def create_network(self, flags: int = 0) -> FakeNetwork:
        self.networks.append(FakeNetwork(self, int(flags)))
        return self.networks[-1]

    def create_builder_config(self) -> FakeConfig:
        self.configs.append(FakeConfig(self))
        return self.configs[-1]

    def create_optimization_profile(self) -> FakeProfile:
        return FakeProfile()

    def build_serialized_network(self, network: FakeNetwork, config: FakeConfig):
        if network not in self.networks or config not in self.configs:
            raise ContractError("build_serialized_network with a network or config of another builder")
        if not network.parsed:
            raise ContractError("build_serialized_network before the ONNX graph was parsed into the network")
        if not config.profiles:
            raise ContractError("build_serialized_network without an optimisation profile (the inputs are dynamic)")
        for k, p in enumerate(config.profiles):
            missing = [t.name for t in network.inputs if t.name not in p.shapes]
            if missing:
                raise ContractError(f"optimisation profile {k} has no shape for input(s) {missing}")
        self._check_precision(network, config)
        config.built = True
        layers = {layer.name: self._layer_record(layer) for layer in network.layers}
        self.built.append({"flags": sorted(config.flags), "strongly_typed": network.strongly_typed, "layers": layers})
        return _plan(network, config)

    @staticmethod
    def _layer_record(layer: FakeLayer) -> dict:
        precision = getattr(layer, "precision", None)
        return {"type": layer.type.name, "precision": precision.name if precision is not None else None,
                "output_types": {i: t.name for i, t in getattr(layer, "output_types", {}).items()}}  # fmt: skip

    @staticmethod
    def _check_precision(network: FakeNetwork, config: FakeConfig) -> None:
        constrained = [layer.name for layer in network.layers if getattr(layer, "precision", None) is not None
                       or getattr(layer, "output_types", None)]  # fmt: skip
        if network.strongly_typed:
            if config.flags & PRECISION_FLAGS:
                raise ContractError(f"a strongly typed network with precision flags {sorted(config.flags & PRECISION_FLAGS)}")
            if constrained:
                raise ContractError(f"a strongly typed network with per-layer precision on {constrained[:3]}")
            return
        if constrained and not config.flags & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"}:
            raise ContractError(f"per-layer precision on {constrained[:3]} without OBEY/PREFER_PRECISION_CONSTRAINTS "
                                "(TensorRT would ignore it)")  # fmt: skip
        qdq = any(layer.type.name in ("QUANTIZE", "DEQUANTIZE") for layer in network.layers)
        if "INT8" in config.flags and not qdq:
            raise ContractError("INT8 flag on a network without Q/DQ layers (implicit quantisation needs a calibrator)")
        if qdq and "INT8" not in config.flags:
            raise ContractError("Q/DQ layers in a weakly typed network without the INT8 flag")


class _HostMemory:
    def __init__(self, data: bytes):
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data


def _plan(network: FakeNetwork, config: FakeConfig) -> _HostMemory:
    """The JSON plan tests/fakes_trt.py's runtime deserialises: tensors, types and profile shapes."""
    tensors = [{"name": t.name, "mode": mode, "dtype": t.dtype, "shape": t.shape}
               for mode, ts in (("input", network.inputs), ("output", network.outputs)) for t in ts]  # fmt: skip
    profiles = [{n: [list(s) for s in shapes] for n, shapes in p.shapes.items()} for p in config.profiles]
    return _HostMemory(json.dumps({"tensors": tensors, "profiles": profiles}).encode())


def fake_tensorrt_builder(version: str = "10.13.3.9", gpu: str = "NVIDIA H100 80GB HBM3",
                          cuda: FakeCuda | None = None) -> types.ModuleType:  # fmt: skip
    """``fake_tensorrt`` (the runtime) plus the build API of ``version``'s major; builders land in ``.builders``."""
    trt = fake_tensorrt(cuda or FakeCuda(), version)
    major = int(version.split(".")[0])
    trt.builders = []

    def builder(logger):
        trt.builders.append(FakeBuilder(logger, major, gpu))
        return trt.builders[-1]

    trt.Builder, trt.OnnxParser = builder, FakeOnnxParser
    trt.BuilderFlag = IntEnum("BuilderFlag", FLAGS[major])
    trt.LayerType, trt.MemoryPoolType = LayerType, MemoryPoolType
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    assert set(DTYPES) <= set(vars(trt))
    return trt


def install_builder(monkeypatch, version: str = "10.13.3.9"):
    """One fake H100 and the fake ``tensorrt`` (build and run side); returns (cuda, trt)."""
    import sys

    import abaw_rt.cuda.gpu as gpu
    from tests.fakes_trt import H100

    cuda = FakeCuda()
    trt = fake_tensorrt_builder(version, H100.name, cuda)
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [H100])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return cuda, trt
