"""Runner layer: OrtRunner, ONNX Runtime on CPU (here) or its CUDA / TensorRT execution providers."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.runners.base import Runner

# Our provider names -> onnxruntime's.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OrtRunner(Runner):
    """Runs an ONNX graph exported by ``abaw-rt export`` with onnxruntime.

    Its specs and header come from the graph's own metadata, and are checked against the session's
    real inputs and outputs. External weights must sit inside the graph's folder.

    Args:
        path: the ``.onnx`` file.
        provider: "cpu", "cuda" or "tensorrt" (GPU ones need ``pip install 'abaw-rt[gpu]'``).
        provider_options: passed to the provider as is (e.g. TensorRT's ``trt_fp16_enable``,
            ``trt_engine_cache_path``, ``trt_profile_min_shapes``). None: CPU none; CUDA and TensorRT
            get ``gpu_provider_options`` for the graph (explicit profiles, so TensorRT never rebuilds mid-video).
        threads: intra-op threads (None: onnxruntime's default, one per core).
    """

    name = "ort"

    def __init__(
        self,
        path: Path | str,
        provider: str = "cpu",
        provider_options: Mapping[str, object] | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        from abaw_rt.graphs.metadata import read_onnx_info
        from abaw_rt.graphs.safety import check_external_data

        self.path = Path(path)
        self.info = read_onnx_info(self.path)
        check_external_data(self.path)
        self.header = self.info.header
        self.input_specs = self.info.inputs
        self.output_specs = self.info.outputs
        self.precision = self.info.precision
        if provider not in PROVIDERS:
            raise AbawRtError(f"provider {provider!r}: expected one of {sorted(PROVIDERS)}")
        self.provider = provider
        if provider_options is None and provider != "cpu":
            provider_options = gpu_provider_options(provider, self.info)
        self.provider_options = dict(provider_options or {})
        if provider == "tensorrt" and str(self.provider_options.get("trt_fp16_enable", "")).lower() in ("1", "true"):
            self.precision = "fp16"  # FP16 kernels over an FP32 graph: judged with fp16 tolerances
        self.threads = threads
        self.session = None

    def _activate(self) -> None:
        # no memory pattern: onnxruntime plans (and keeps) one more arena block per new feed shape, and a long
        # video's fusion calls see several batch sizes (+14 MB measured; README, "Live and streaming inference")
        self.session = open_session(self.path, self.provider, self.provider_options, self.threads, mem_pattern=False)
        self._check_session()
        self._output_names = [s.name for s in self.output_specs]

    def _check_session(self) -> None:
        """The graph's real interface must be the one its metadata declares."""
        real_in = {i.name: i for i in self.session.get_inputs()}
        real_out = {o.name for o in self.session.get_outputs()}
        for spec in self.input_specs:
            node = real_in.get(spec.name)
            if node is None:
                raise AbawRtError(
                    f"ONNX '{self.path}': declares input '{spec.name}' but the graph has {sorted(real_in)}"
                )
            if len(node.shape) != len(spec.shape) or any(
                isinstance(d, int) and d != r for d, r in zip(spec.shape, node.shape)
            ):
                raise AbawRtError(
                    f"ONNX '{self.path}': input '{spec.name}' has shape {node.shape}, metadata declares {list(spec.shape)}"
                )
        if set(real_in) != {s.name for s in self.input_specs}:
            raise AbawRtError(f"ONNX '{self.path}': graph inputs {sorted(real_in)} differ from its metadata")
        missing = [s.name for s in self.output_specs if s.name not in real_out]
        if missing:
            raise AbawRtError(f"ONNX '{self.path}': graph lacks declared output(s) {missing}")

    def _deactivate(self) -> None:
        self.session = None

    def _describe(self) -> dict:
        return {"provider": self.provider, "threads": self.threads}

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._output_names, dict(feeds))
        except Exception as exc:
            raise AbawRtError(f"ONNX '{self.path}': onnxruntime failed ({str(exc).splitlines()[0]})") from None
        return dict(zip(self._output_names, outs))


def _shape_list(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def gpu_provider_options(
    provider: str,
    info,
    profiles=None,
    fp16: bool = False,
    cache_dir: Path | None = None,
    device_id: int = 0,
    workspace_mib: int | None = None,
    optimization_level: int = 3,
) -> dict[str, str]:
    """Options for onnxruntime's CUDA or TensorRT execution provider, derived from the graph's specs.

    Args:
        provider: "cuda" or "tensorrt".
        info: the graph's ``OnnxInfo`` (input specs, window).
        profiles: TensorRT optimisation profiles (default: ``default_profiles(window)``); given
            explicitly so TensorRT builds once for the whole range instead of again at each new shape.
        fp16: TensorRT only: FP16 kernels for an FP32 graph (FP16 flag, LayerNorm kept in FP32). An
            FP16 graph is built strongly typed from its own types and needs no flag.
        cache_dir: TensorRT only: folder for the engine and timing caches (None: no caches).
        device_id: CUDA device.
        workspace_mib: TensorRT builder workspace limit.
        optimization_level: TensorRT builder optimisation level 0..5.
    """
    if provider == "cuda":
        # TF32 off: fp32 graphs stay within fp32 tolerances of the CPU reference.
        return {"device_id": str(device_id), "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0"}
    if provider != "tensorrt":
        raise AbawRtError(f"provider {provider!r}: GPU options exist for 'cuda' and 'tensorrt'")
    from abaw_rt.trt.profiles import default_profiles

    profiles = tuple(profiles or default_profiles(info.header.window))
    fp16_flag = bool(fp16) and info.precision == "fp32"
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": str(fp16_flag),
        "trt_layer_norm_fp32_fallback": str(fp16_flag),
        "trt_builder_optimization_level": str(optimization_level),
    }
    # One "name:AxBxC" per input per profile; onnxruntime reads a repeated name as the next profile.
    for idx, which in enumerate(("min", "opt", "max")):
        per_profile = [{name: s[idx] for name, s in p.shapes(info.inputs).items()} for p in profiles]
        opts[f"trt_profile_{which}_shapes"] = ",".join(_shape_list(shapes) for shapes in per_profile)
    if workspace_mib:
        opts["trt_max_workspace_size"] = str(workspace_mib << 20)
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        opts.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=str(cache_dir),
            trt_timing_cache_enable="True",
            trt_timing_cache_path=str(cache_dir),
        )
    return opts


def open_session(
    path: Path,
    provider: str,
    provider_options: Mapping[str, object] | None = None,
    threads: int | None = None,
    spin: bool = True,
    what: str = "ONNX",
    mem_pattern: bool = True,
):
    """An onnxruntime session on ``provider`` (falling back to CPU for unsupported nodes), quiet logs.

    Args:
        threads: intra-op threads (None: onnxruntime's default, one per core); inter-op stays 1.
        spin: let idle intra-op threads spin between calls (onnxruntime's default).
        what: how errors name the graph.
        mem_pattern: onnxruntime's memory-pattern planning (its default; off keeps memory flat across shapes).
    """
    ort = require_module("onnxruntime", "gpu" if provider != "cpu" else "dev")
    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        raise AbawRtError(
            f"onnxruntime provider {wanted} is not available (have {ort.get_available_providers()}); "
            "install onnxruntime-gpu: pip install 'abaw-rt[gpu]'"
        )
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_mem_pattern = mem_pattern
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [(wanted, dict(provider_options or {}))]
    if wanted != "CPUExecutionProvider":
        providers.append(("CPUExecutionProvider", {}))
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise AbawRtError(f"{what} '{path}': onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
