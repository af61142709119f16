"""Engine build layer: engine recipes, small JSON files in ``engines/recipes/`` naming a target GPU's profiles and limits.

A recipe says, for one class of GPU, which optimisation profiles to build (batch and time ranges),
how much builder workspace to allow and which builder optimisation level to use. ``abaw-rt build
--recipe h100`` reads ``engines/recipes/h100.json``; ``--recipe path/to/file.json`` reads that file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abaw_rt.errors import AbawRtError
from abaw_rt.trt.profiles import AxisRange, ProfileSpec

RECIPE_FORMAT = "abaw-rt-engine-recipe"
RECIPES_DIR = Path("engines") / "recipes"


@dataclass(frozen=True)
class EngineRecipe:
    """How to build engines for one target."""

    name: str  # short name, the file's stem ("h100")
    description: str  # which GPUs and which use (live segments, offline batches)
    profiles: tuple[ProfileSpec, ...]  # optimisation profiles, selectable at run time
    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default (device memory)
    optimization_level: int = 3  # builder optimisation level 0..5 (TensorRT's default is 3)
    gpus: tuple[str, ...] = ()  # GPU names the recipe is meant for (informational, shown in the sidecar)
    extractor_batch: AxisRange | None = None  # extractor graphs: the batch axis's profile when --batch is absent

    def to_dict(self) -> dict:
        return {
            "format": RECIPE_FORMAT,
            "name": self.name,
            "description": self.description,
            "gpus": list(self.gpus),
            "workspace_mib": self.workspace_mib,
            "optimization_level": self.optimization_level,
            "profiles": [p.to_dict() for p in self.profiles],
            **({"extractor_batch": self.extractor_batch.as_list()} if self.extractor_batch else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping, source: str) -> "EngineRecipe":
        if not isinstance(d, Mapping) or d.get("format") != RECIPE_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise AbawRtError(f"recipe '{source}': format {got!r}, expected {RECIPE_FORMAT!r}")
        profiles = d.get("profiles")
        if not isinstance(profiles, list) or not profiles:
            raise AbawRtError(f"recipe '{source}': 'profiles' must be a non-empty list")
        workspace = d.get("workspace_mib")
        level = d.get("optimization_level", 3)
        if workspace is not None and (not isinstance(workspace, int) or workspace < 1):
            raise AbawRtError(f"recipe '{source}': workspace_mib {workspace!r}, expected a positive integer or null")
        if not isinstance(level, int) or not 0 <= level <= 5:
            raise AbawRtError(f"recipe '{source}': optimization_level {level!r}, expected an integer 0..5")
        return cls(
            name=str(d.get("name") or Path(source).stem),
            description=str(d.get("description", "")),
            profiles=tuple(ProfileSpec.from_dict(p, f"recipe '{source}' profile") for p in profiles),
            workspace_mib=workspace,
            optimization_level=level,
            gpus=tuple(str(g) for g in d.get("gpus", ())),
            extractor_batch=_extractor_batch(d.get("extractor_batch"), source),
        )


def _extractor_batch(value, source: str) -> AxisRange | None:
    """``[min, opt, max]`` or ``{"min": .., "opt": .., "max": ..}``; None when absent."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if set(value) != {"min", "opt", "max"}:
            raise AbawRtError(f"recipe '{source}': extractor_batch {dict(value)!r}, expected min, opt and max")
        value = [value["min"], value["opt"], value["max"]]
    if not isinstance(value, list) or len(value) != 3:
        raise AbawRtError(f"recipe '{source}': extractor_batch {value!r}, expected [min, opt, max]")
    return AxisRange.parse(value, f"recipe '{source}' extractor_batch")


def recipe_dirs() -> list:
    """Where recipe names are looked up: ``./engines/recipes`` (your own), then the recipes shipped inside the
    package (``abaw_rt/engines/recipe_files/``, read through importlib.resources, so they work from a wheel)."""
    from importlib.resources import files

    return [RECIPES_DIR, files("abaw_rt.engines") / "recipe_files"]


def default_timing_cache() -> Path:
    """TensorRT's timing cache: ``$ABAW_RT_CACHE`` or ``~/.cache/abaw-rt``, ``timing.cache`` (any working folder)."""
    root = os.environ.get("ABAW_RT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "abaw-rt"
    return Path(root) / "timing.cache"


def available_recipes() -> list[str]:
    names: set[str] = set()
    for d in recipe_dirs():
        if d.is_dir():
            names.update(p.name[: -len(".json")] for p in d.iterdir() if p.name.endswith(".json"))
    return sorted(names)


def load_engine_recipe(name_or_path: str | Path) -> EngineRecipe:
    """A recipe by name (``h100``) or path (``my.json``).

    Raises:
        AbawRtError: no such recipe (lists the known ones), unreadable JSON or invalid fields.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.is_file():
        path = candidate
    else:
        path = next((d / f"{name_or_path}.json" for d in recipe_dirs() if (d / f"{name_or_path}.json").is_file()), None)
    if path is None or not path.is_file():  # (a Traversable from the package, or a Path)
        raise AbawRtError(
            f"recipe {str(name_or_path)!r}: no such file or recipe name; known recipes: {available_recipes() or 'none'}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AbawRtError(f"recipe '{path}': not readable JSON ({exc})") from None
    return EngineRecipe.from_dict(data, str(path))
