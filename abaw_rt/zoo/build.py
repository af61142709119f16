"""Zoo layer: ``abaw-rt zoo build`` (graphs + the paper's specs) and ``abaw-rt zoo import`` (a user's real file).

``build_zoo`` writes one graph per extractor and the specs ``paper-va.toml``, ``paper-va_arcface.toml``,
``paper-expr.toml`` and ``paper-au.toml``, whose extractors are exactly those of the presets
(``abaw_rt.model.config.PRESET_FEATURES``). ``import_extractor`` converts or checks a user's file against its
recipe's contract and writes it into a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import PRESET_FEATURES
from abaw_rt.pipeline.synthetic import write_spec
from abaw_rt.zoo.contract import Contract, check_contract, expose_classifier_input
from abaw_rt.zoo.recipes import RECIPES, Recipe, recipe, spec_table

SIZES = ("paper", "tiny")
DIMS = ("paper", "native")


@dataclass(frozen=True)
class ZooBuild:
    graphs: dict[str, Path]  # extractor name -> graph
    specs: dict[str, Path]  # preset -> spec file


def graph_name(name: str, size: str, dims: str) -> str:
    return f"{name}.{size}{'' if dims == 'paper' else '.native'}.onnx"


def build_zoo(folder: Path, only=None, size: str = "paper", dims: str = "paper", seed: int = 0) -> ZooBuild:
    """Build the reference graphs (all, or ``only`` these names) and the specs of every preset they cover."""
    from abaw_rt.zoo.graphs import build_graph

    if size not in SIZES or dims not in DIMS:
        raise AbawRtError(f"size {size!r} / dims {dims!r}: expected one of {SIZES} / {DIMS}")
    names = list(only or RECIPES)
    for n in names:
        recipe(n)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for i, n in enumerate(names):
        graphs[n] = build_graph(RECIPES[n], folder / graph_name(n, size, dims), size, dims, seed + i)
    specs = {}
    for preset, (feats, _) in PRESET_FEATURES.items():
        if all(f in graphs for f in feats):
            tables = [spec_table(RECIPES[f], graphs[f].name, RECIPES[f].dim(size, dims), RECIPES[f].output(dims))
                      for f in feats]  # fmt: skip
            specs[preset] = write_spec(folder / f"paper-{preset}.toml", tables)
    return ZooBuild(graphs, specs)


def import_extractor(src: Path, name: str, out: Path, spec: Path | None = None, classes: int | None = None) -> Contract:
    """Make ``src`` (an ONNX file, a DAN ``.pth``, or a local wav2vec2 model folder) an extractor graph at ``out``
    that meets recipe ``name``'s contract, and add/replace its table in ``spec`` (created if missing)."""
    r = recipe(name)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise AbawRtError(f"'{src}': no such file or folder")
    if src.is_dir() or src.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors"):
        _convert(r, src, out, classes)
    elif src.suffix.lower() == ".onnx":
        _copy_onnx(r, src, out)
    else:
        raise AbawRtError(f"'{src}': expected an .onnx graph, a PyTorch checkpoint (.pth/.pt) or a model folder")
    contract = check_contract(r, out)
    if spec is not None:
        write_into_spec(Path(spec), r, out, contract)
    return contract


def _copy_onnx(r: Recipe, src: Path, out: Path) -> None:
    import onnx

    from abaw_rt.io import atomic_write_bytes

    model = onnx.load(str(src))
    first = check_contract(r, src, model=model, need_output=False)
    if first.output is None and r.family == "effnet":  # HSEmotion: logits only; expose the pooled feature
        model = expose_classifier_input(model, "features", what=f"'{src}'")
    atomic_write_bytes(out, model.SerializeToString())


def _convert(r: Recipe, src: Path, out: Path, classes: int | None) -> None:
    from abaw_rt.errors import require_module
    from abaw_rt.zoo.graphs import export_extractor

    torch = require_module("torch", "torch")
    if r.family == "wav2vec2":
        module = _wav2vec2_from_folder(src)
        meta = {"imported_from": src.name}
    elif r.family == "dan":
        state = _dan_state(torch, src)
        n_classes = classes or int(state["fc.weight"].shape[0])
        module = _dan_module(r, state, n_classes)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise AbawRtError(f"'{src}': not a DAN state_dict ({str(exc).splitlines()[0]})") from None
        meta = {"imported_from": src.name, "classes": n_classes}
    else:
        raise AbawRtError(f"recipe '{r.name}': its public release is ONNX; pass the .onnx file")
    export_extractor(module.eval(), r, out, {**meta, "trained": True})


def _dan_state(torch, src: Path) -> dict:
    try:
        ckpt = torch.load(str(src), map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as exc:
        raise AbawRtError(f"'{src}': not a weights-only PyTorch checkpoint ({str(exc).splitlines()[0]})") from None
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise AbawRtError(f"'{src}': expected a DAN checkpoint (a dict with 'model_state_dict' holding 'fc.weight')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _dan_module(r: Recipe, state: dict, classes: int):
    """A DAN of the checkpoint's widths (the released ones are ResNet-18's 64..512)."""
    from abaw_rt.zoo.nets_vision import DAN

    try:
        widths = tuple(int(state[f"features.{4 + i}.0.conv1.weight"].shape[0]) for i in range(4))
    except KeyError as exc:
        raise AbawRtError(f"DAN checkpoint: no tensor {exc} (not a ResNet-18 DAN)") from None
    heads = sum(1 for k in state if k.startswith("cat_head") and k.endswith(".sa.conv1x1.0.weight"))
    return DAN(classes=classes, heads=heads or 4, widths=widths)


def _wav2vec2_from_folder(src: Path):
    """audEERING's Hugging Face folder (config.json + weights), local files only."""
    from abaw_rt.errors import require_module
    from abaw_rt.zoo.nets_audio import wav2vec2_pooled

    transformers = require_module("transformers", "zoo")
    if not src.is_dir() or not (src / "config.json").is_file():
        raise AbawRtError(f"'{src}': expected a model folder with config.json and the weights")
    cfg = transformers.Wav2Vec2Config.from_pretrained(str(src), local_files_only=True)
    module = wav2vec2_pooled(cfg)
    loaded = transformers.Wav2Vec2Model.from_pretrained(str(src), config=cfg, local_files_only=True)
    module.wav2vec2 = loaded
    return module


def write_into_spec(spec: Path, r: Recipe, graph: Path, contract: Contract) -> Path:
    """Add (or replace, by name) recipe ``r``'s table for ``graph`` in ``spec``, keeping its other tables."""
    data = {}
    if spec.is_file():
        try:
            data = tomllib.loads(spec.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise AbawRtError(f"extractor spec '{spec}': not valid TOML ({exc})") from None
    tables = [t for t in data.get("extractor", []) if t.get("name") != r.name]
    try:
        rel = str(graph.resolve().relative_to(spec.resolve().parent))
    except ValueError:
        rel = str(graph.resolve())
    tables.append(spec_table(r, rel, contract.dim, contract.output, contract.input))
    spec.parent.mkdir(parents=True, exist_ok=True)
    return write_spec(spec, tables, data.get("detector"))
