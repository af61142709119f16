"""Engine build layer: engine recipes, small JSON files in ``engines/recipes/`` naming a target GPU's profiles and limits.

A recipe says, for one class of GPU, which optimisation profiles to build (batch and time ranges),
how much builder workspace to allow and which builder optimisation level to use. ``abaw-rt build
--recipe h100`` reads ``engines/recipes/h100.json``; ``--recipe path/to/file.json`` reads that file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abaw_rt.errors import AbawRtError
from abaw_rt.trt.profiles import ProfileSpec

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

    def to_dict(self) -> dict:
        return {
            "format": RECIPE_FORMAT,
            "name": self.name,
            "description": self.description,
            "gpus": list(self.gpus),
            "workspace_mib": self.workspace_mib,
            "optimization_level": self.optimization_level,
            "profiles": [p.to_dict() for p in self.profiles],
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
        )


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up: ``./engines/recipes``, then the source tree's (editable installs)."""
    here = Path(__file__).resolve().parents[2] / RECIPES_DIR
    dirs = [RECIPES_DIR]
    if here.resolve() != RECIPES_DIR.resolve():
        dirs.append(here)
    return dirs


def available_recipes() -> list[str]:
    names: set[str] = set()
    for d in recipe_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json"))
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
    if path is None or not path.is_file():
        raise AbawRtError(
            f"recipe {str(name_or_path)!r}: no such file or recipe name; known recipes: {available_recipes() or 'none'}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AbawRtError(f"recipe '{path}': not readable JSON ({exc})") from None
    return EngineRecipe.from_dict(data, str(path))
