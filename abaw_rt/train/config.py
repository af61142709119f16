"""Training layer: the frozen training config (what a recipe file holds), the paper's values as defaults. Torch-free.

A recipe is a TOML file with a top-level ``task`` and the sections ``[model]``, ``[data]``, ``[windows]``,
``[optim]`` and ``[run]`` (see ``training/recipes/*.toml``). Unknown keys are rejected, not ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import TINY, FeatureGroup, ModelConfig
from abaw_rt.vocab import Device, Merge, ModelSize, Task



@dataclass(frozen=True)
class ModelSection:
    features: tuple[str, ...]  # extractor names in input order; dims and modality come from the feature store
    size: ModelSize = ModelSize.paper  # base widths: the paper's, or tiny
    dropout: float = 0.3  # Zhou et al. 2023, implementation details: dropout 0.3 (TCN, attention, heads)
    arch: tuple[tuple[str, Any], ...] = ()  # further ModelConfig fields, e.g. (("d_model", 64),): [model.arch] table

    def __post_init__(self) -> None:
        if not self.features or len(set(self.features)) != len(self.features):
            raise AbawRtError(f"[model] features: got {list(self.features)}, expected distinct extractor names")
        if not 0.0 <= self.dropout < 1.0:
            raise AbawRtError(f"[model] dropout: got {self.dropout}, expected 0 <= dropout < 1")
        allowed = {f.name for f in fields(ModelConfig)} - {"features", "heads", "dropout"}
        bad = sorted(k for k, _ in self.arch if k not in allowed)
        if bad:
            raise AbawRtError(f"[model.arch]: unknown field(s) {bad}; expected some of {sorted(allowed)}")


@dataclass(frozen=True)
class DataSection:
    root: str = "data/affwild2"  # folder holding the feature store and the annotations (relative to the cwd)
    features: str = "features"  # feature store folder (abaw_rt.store layout), relative to root
    annotations: str = ""  # the task's annotation folder relative to root, e.g. "annotations/VA_Estimation_Challenge"
    train_split: str = "Train_Set"  # sub-folder of annotations with the training videos' .txt files
    val_split: str = "Validation_Set"  # sub-folder with the validation videos' .txt files
    # Aff-Wild2 label files and decoded frame counts often differ by a frame or two: up to this many frames
    # extra labels are dropped and missing labels count as invalid; a larger gap is an error.
    max_length_mismatch: int = 5
    # read feature files memory-mapped and build windows per batch (peak memory bounded whatever the store's
    # size); false loads every video into memory. Both give the same numbers.
    memory_map: bool = True

    def __post_init__(self) -> None:
        if not self.annotations:
            raise AbawRtError("[data] annotations: the task's annotation folder (relative to root) is required")
        if self.max_length_mismatch < 0:
            raise AbawRtError(f"[data] max_length_mismatch: got {self.max_length_mismatch}, expected >= 0")

    def features_dir(self) -> Path:
        return Path(self.root) / self.features

    def annotations_dir(self, split: str) -> Path:
        return Path(self.root) / self.annotations / split


@dataclass(frozen=True)
class WindowSection:
    window: int = 300  # segment length w (Zhou et al. 2023, segments, w = 300 / s = 200)
    stride: int = 200  # segment stride s; training windows keep the (shorter, padded) tail
    merge: Merge = Merge.centre  # how validation stitches overlapping windows: the inference pipeline's policy

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.stride <= self.window:
            raise AbawRtError(f"[windows]: window {self.window}, stride {self.stride}; expected 1 <= stride <= window")


@dataclass(frozen=True)
class OptimSection:
    lr: float = 3e-5  # AdamW peak learning rate (Zhou et al. 2023, implementation details)
    weight_decay: float = 1e-5  # AdamW weight decay
    batch_size: int = 32  # segments per step
    epochs: int = 40  # the paper is silent; authors' code: VA 40, EXPR and AU 30
    warmup_epochs: float = 1.0  # linear warm-up length (paper: one epoch), then cosine decay to min_lr
    min_lr: float = 0.0  # floor of the cosine schedule
    grad_clip: float = 0.0  # max gradient L2 norm; 0 turns clipping off (the authors did not clip)

    def __post_init__(self) -> None:
        problems = []
        if not self.lr > 0:
            problems.append(f"lr {self.lr} (expected > 0)")
        if self.weight_decay < 0 or self.min_lr < 0 or self.grad_clip < 0:
            problems.append("weight_decay, min_lr and grad_clip must be >= 0")
        if self.batch_size < 1 or self.epochs < 1:
            problems.append(f"batch_size {self.batch_size}, epochs {self.epochs} (expected >= 1)")
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs {self.warmup_epochs} (expected >= 0)")
        if problems:
            raise AbawRtError("[optim]: " + "; ".join(problems))


@dataclass(frozen=True)
class RunSection:
    seed: int = 42  # seeds init, shuffling and dropout (authors' code: 42)
    device: Device = Device.auto  # where to train
    amp: bool = False  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch intra-op CPU threads; 0 leaves torch's default
    eval_batch_size: int = 32  # windows per forward pass during validation
    folds: int = 5  # cross-validation folds over train+validation videos (Zhou et al. 2023: five folds)

    def __post_init__(self) -> None:
        if self.threads < 0 or self.eval_batch_size < 1 or self.folds < 2:
            raise AbawRtError(
                f"[run]: threads {self.threads} (>= 0), eval_batch_size {self.eval_batch_size} (>= 1), "
                f"folds {self.folds} (>= 2) expected"
            )


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the task, the model, where the data is, windows, optimiser and run settings."""

    task: Task  # which head is trained and which loss/metric apply
    model: ModelSection
    data: DataSection
    windows: WindowSection = field(default_factory=WindowSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    name: str = ""  # recipe name (its file stem), recorded in the checkpoint's provenance
    # Further heads trained in the same run on the same trunk, losses summed (``task = ["va", "expr"]`` in a
    # recipe); their targets come with pre-loaded data (the Python API), e.g. the demo model's VA + EXPR.
    extra_tasks: tuple[Task, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.tasks)) != len(self.tasks):
            raise AbawRtError(f"task: got {[t.value for t in self.tasks]}, expected distinct tasks")

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Every head this run trains, the recipe's ``task`` first."""
        return (self.task, *self.extra_tasks)

    # -- derived ------------------------------------------------------------------------------------
    def model_config(self, extractors: Mapping[str, Mapping[str, Any]]) -> ModelConfig:
        """The ModelConfig for this recipe, taking each feature's dim and modality from the feature store index."""
        groups = []
        for name in self.model.features:
            if name not in extractors:
                raise AbawRtError(
                    f"[model] features: extractor '{name}' is not in the feature store (it has {sorted(extractors)})"
                )
            spec = extractors[name]
            groups.append(FeatureGroup(name, int(spec["dim"]), str(spec["modality"])))
        base: dict[str, Any] = dict(TINY) if self.model.size is ModelSize.tiny else {}
        base.update(dict(self.model.arch))
        base.update(features=tuple(groups), heads=tuple(t.value for t in self.tasks), dropout=self.model.dropout)
        return ModelConfig(**base)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = _plain(dataclasses.asdict(self))
        d["model"]["arch"] = {k: _plain(v) for k, v in self.model.arch}
        extra = d.pop("extra_tasks")
        if extra:  # one task stays a string, as recipes write it
            d["task"] = [d["task"], *extra]
        return d

    @classmethod
    def from_dict(cls, d: Mapping, source: str = "recipe") -> "TrainConfig":
        if not isinstance(d, Mapping):
            raise AbawRtError(f"{source}: expected a table of settings")
        sections = {
            "model": ModelSection,
            "data": DataSection,
            "windows": WindowSection,
            "optim": OptimSection,
            "run": RunSection,
        }
        unknown = sorted(set(d) - set(sections) - {"task", "name"})
        if unknown:
            raise AbawRtError(f"{source}: unknown key(s) {unknown}; expected task, name, {', '.join(sections)}")
        if "task" not in d:
            raise AbawRtError(f"{source}: 'task' is required (one of {[t.value for t in Task]})")
        try:
            tasks = d["task"] if isinstance(d["task"], (list, tuple)) and d["task"] else [d["task"]]
            kw: dict[str, Any] = {
                "task": _coerce(tasks[0], Task, "task"),
                "extra_tasks": tuple(_coerce(x, Task, "task") for x in tasks[1:]),
                "name": str(d.get("name", "")),
            }
            for key, cls_ in sections.items():
                if key in d or key in ("model", "data"):
                    kw[key] = _build(cls_, d.get(key, {}), f"[{key}]")
            return cls(**kw)
        except AbawRtError as exc:
            raise AbawRtError(f"{source}: {exc}") from None

    def replace(self, **changes: Mapping[str, Any]) -> "TrainConfig":
        """A copy with ``section={key: value}`` changes applied (validated like a recipe)."""
        d = self.to_dict()
        for section, values in changes.items():
            if isinstance(values, Mapping):
                d[section] = {**d.get(section, {}), **values}
            else:
                d[section] = values
        return TrainConfig.from_dict(d, source="config")


def _plain(v: Any) -> Any:
    """Enums to values, tuples to lists: JSON/TOML-friendly."""
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, type) and issubclass(kind, Enum):
        try:
            return kind(value)
        except ValueError:
            raise AbawRtError(f"{where}: got {value!r}, expected one of {[k.value for k in kind]}") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise AbawRtError(f"{where}: got {value!r}, expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AbawRtError(f"{where}: got {value!r}, expected an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AbawRtError(f"{where}: got {value!r}, expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise AbawRtError(f"{where}: got {value!r}, expected a string")
        return value
    if kind == "names":
        if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(x, str) for x in value):
            raise AbawRtError(f"{where}: got {value!r}, expected a list of names")
        return tuple(value)
    if kind == "arch":
        if not isinstance(value, Mapping):
            raise AbawRtError(f"{where}: got {value!r}, expected a table of ModelConfig fields")
        return tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in sorted(value.items()))
    raise TypeError(kind)  # pragma: no cover - a programming error in _KINDS


_KINDS: dict[type, dict[str, Any]] = {
    ModelSection: {"features": "names", "size": ModelSize, "dropout": float, "arch": "arch"},
    DataSection: {
        "root": str,
        "features": str,
        "annotations": str,
        "train_split": str,
        "val_split": str,
        "max_length_mismatch": int,
        "memory_map": bool,
    },
    WindowSection: {"window": int, "stride": int, "merge": Merge},
    OptimSection: {
        "lr": float,
        "weight_decay": float,
        "batch_size": int,
        "epochs": int,
        "warmup_epochs": float,
        "min_lr": float,
        "grad_clip": float,
    },
    RunSection: {"seed": int, "device": Device, "amp": bool, "threads": int, "eval_batch_size": int, "folds": int},
}


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, Mapping):
        raise AbawRtError(f"{where}: got {table!r}, expected a table")
    kinds = _KINDS[cls]
    unknown = sorted(set(table) - set(kinds))
    if unknown:
        raise AbawRtError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(kinds)}")
    required = [
        f.name for f in fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in table]
    if missing:
        raise AbawRtError(f"{where}: missing required key(s) {missing}")
    return cls(**{k: _coerce(v, kinds[k], f"{where} {k}") for k, v in table.items()})


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from abaw_rt.errors import require_module

        tomllib = require_module("tomli", "train")
    return tomllib


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001). Values are TOML values; bare words are strings."""
    if "=" not in text:
        raise AbawRtError(f"--set {text!r}: expected section.key=value, e.g. optim.lr=1e-3")
    key, raw = (s.strip() for s in text.split("=", 1))
    path = key.split(".")
    if not all(path) or len(path) > 3:
        raise AbawRtError(f"--set {text!r}: expected section.key=value, e.g. optim.lr=1e-3")
    tomllib = _toml()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(d: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides to a recipe table (a new dict; the input is not changed)."""
    import copy

    d = copy.deepcopy(dict(d))
    for text in overrides:
        path, value = parse_override(text)
        node = d
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AbawRtError(f"--set {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return d


def read_recipe_table(path: Path) -> dict:
    """The raw TOML table of a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"recipe '{path}': no such file")
    tomllib = _toml()
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AbawRtError(f"recipe '{path}': not valid TOML ({exc})") from None


def load_train_recipe(path: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a recipe file, apply ``section.key=value`` overrides, validate. The recipe name is the file stem."""
    path = Path(path)
    table = apply_overrides(read_recipe_table(path), overrides)
    table.setdefault("name", path.stem)
    return TrainConfig.from_dict(table, source=f"recipe '{path}'")
