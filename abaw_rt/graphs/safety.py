"""Graph layer: refuse hostile ONNX files before any runtime opens them (torch-free)."""

from __future__ import annotations

from pathlib import Path

from abaw_rt.errors import AbawRtError


def external_data_files(path: Path) -> list[Path]:
    """The external weight files an ONNX graph refers to, each checked to lie inside the graph's folder.

    Raises:
        AbawRtError: a location that is absolute, climbs out of the folder (``../``), or is missing.
    """
    from abaw_rt.graphs.protolite import read_model_summary

    path = Path(path)
    refs = read_model_summary(path).external
    folder = path.parent.resolve()
    files: list[Path] = []
    for ref in refs:
        location = ref.location
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise AbawRtError(
                f"ONNX '{path}': tensor '{ref.tensor}' points its external data at '{location}', "
                "outside the model's folder; refusing to load it"
            )
        if not target.is_file():
            raise AbawRtError(f"ONNX '{path}': external data file '{location}' for tensor '{ref.tensor}' is missing")
        if target not in files:
            files.append(target)
    return files


def check_external_data(path: Path) -> None:
    external_data_files(path)
