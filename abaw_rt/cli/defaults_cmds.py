"""CLI layer: the built-in offline defaults: list them (``abaw-rt defaults``) and make a sample video to run them on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from abaw_rt.cli import app, out, user_errors


@app.command("make-sample-video")
@user_errors
def make_sample_video(
    output: Annotated[
        Path, typer.Argument(metavar="OUT", dir_okay=False, help="Video file to write (.mp4, .mkv).")
    ] = Path("sample.mp4"),
    seconds: Annotated[float, typer.Option("--seconds", min=0.1, max=600, help="Length in seconds.")] = 16.0,
    fps: Annotated[int, typer.Option("--fps", min=1, max=120, help="Frame rate.")] = 25,
    width: Annotated[int, typer.Option("--width", min=64, help="Frame width (even).")] = 640,
    height: Annotated[int, typer.Option("--height", min=64, help="Frame height (even).")] = 360,
    expressive: Annotated[bool, typer.Option(
        "--expressive", help="Faces that change every few seconds (smiling and serious, from scikit-image's LFW "
        "subset: pip install 'abaw-rt[samples]') and a voice whose arousal changes.")] = False,
) -> None:
    """Write a small sample video (a real face that moves and leaves the frame, a voice-like audio track).

    Made on the spot from a shipped public-domain portrait; try the defaults on it: abaw-rt infer sample.mp4
    """
    from abaw_rt.defaults.sample import make_expressive_video, make_sample_video as make

    if expressive:
        path = make_expressive_video(output, seconds=seconds, fps=fps, size=(width, height))[0]
    else:
        path = make(output, seconds=seconds, fps=fps, size=(width, height))
    out.print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {seconds:g} s at {fps} fps); next: abaw-rt infer {path}",
        soft_wrap=True,
    )


@app.command("defaults")
@user_errors
def list_defaults(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON on stdout.")] = False,
) -> None:
    """List the built-in offline models: where they are, their sizes, sha256 and licences."""
    from abaw_rt import defaults
    from abaw_rt.io import file_sha256

    rows = []
    for f in defaults.FILES:
        present = f.path.is_file()
        rows.append(
            {
                "file": f.name,
                "role": f.role,
                "path": str(f.path),
                "bytes": f.path.stat().st_size if present else None,
                "sha256": file_sha256(f.path) if present else None,
                "licence": str(defaults.DEFAULTS_DIR / f.licence) if f.licence else "abaw-rt (MIT)",
                "built_by": defaults.BUILT_BY.get(f.name, "-"),
            }
        )
    if as_json:
        folder = str(defaults.DEFAULTS_DIR)
        out.print_json(data={"folder": folder, "demo_heads": list(defaults.DEMO_HEADS), "files": rows})
        return
    # One block per file, no table: readable at 80 columns and in a pipe, nothing cut (the same in --json).
    out.print(f"abaw-rt built-in defaults in {defaults.DEFAULTS_DIR}", soft_wrap=True, highlight=False, markup=False)
    for r in rows:
        size = f"{r['bytes'] / 1e6:.2f} MB" if r["bytes"] is not None else "MISSING"
        lines = [
            f"{r['file']}  ({size}): {r['role']}",
            f"  sha256   {r['sha256'] or '-'}",
            f"  licence  {Path(r['licence']).name}; built by {r['built_by']}",
        ]
        out.print("\n".join(lines), soft_wrap=True, highlight=False, markup=False)
