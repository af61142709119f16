"""CLI layer: training verbs: train, crossval, evaluate, make-synthetic."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from abaw_rt.cli import app, err, out, user_errors
from abaw_rt.cli.options import ThreadsOpt, pin_threads
from abaw_rt.vocab import Device
from abaw_rt.vocab import ModelSize as Size

RecipeOpt = Annotated[
    Path,
    typer.Option("--recipe", "-r", exists=True, dir_okay=False, help="Recipe file, e.g. training/recipes/va.toml."),
]
DataOpt = Annotated[
    Optional[Path], typer.Option("--data", help="Data root holding features/ and annotations/ (recipe: [data] root).")
]
SizeOpt = Annotated[Optional[Size], typer.Option(help="Model width (recipe: [model] size).")]
EpochsOpt = Annotated[Optional[int], typer.Option(min=1, help="Epochs (recipe: [optim] epochs).")]
DeviceOpt = Annotated[Optional[Device], typer.Option(help="auto, cpu or cuda (recipe: [run] device).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Seed (recipe: [run] seed).")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set", help="Override any recipe value: section.key=value (TOML value), e.g. optim.lr=1e-3. Repeat."
    ),
]
ResumeOpt = Annotated[bool, typer.Option(help="Continue the run in --out from its last finished epoch.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _config(recipe: Path, data, size, epochs, device, seed, sets, threads=None):
    from abaw_rt.train.config import load_train_recipe

    cfg = load_train_recipe(recipe, sets or ())
    if threads is not None or cfg.run.threads == 0:  # --threads, else the small-machine default
        threads = pin_threads(threads)
    changes: dict = {}
    if data is not None:
        changes["data"] = {"root": str(data)}
    if size is not None:
        changes["model"] = {"size": size.value}
    if epochs is not None:
        changes["optim"] = {"epochs": epochs}
    run = {k: v for k, v in (("device", device.value if device else None), ("seed", seed), ("threads", threads)) if v is not None}
    if run:
        changes["run"] = run
    return cfg.replace(**changes) if changes else cfg


class RichReporter:
    """Training progress on stderr: a bar per epoch, then one line of validation metrics."""

    def __init__(self, prefix: str = ""):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.prefix = prefix
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = None
        self.losses: list[float] = []

    def message(self, text: str) -> None:
        err.print(f"{self.prefix}{text}", highlight=False)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        self.losses = []
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{self.prefix}epoch {epoch}/{epochs}", total=batches, loss="-")

    def batch_end(self, loss: float) -> None:
        self.losses.append(loss)
        self.progress.update(self.task, advance=1, loss=f"{sum(self.losses) / len(self.losses):.4f}")

    def epoch_end(self, record) -> None:
        shown = {k: v for k, v in record.metrics.items() if not k.startswith("f1_") and k != "frames"}
        # name=value pairs: a narrow terminal or a log wraps between pairs, never between a metric and its value
        metrics = " ".join(f"{k}={v:.4f}" for k, v in shown.items())
        star = " [green]best[/]" if record.best else ""
        self.progress.console.print(
            f"{self.prefix}epoch {record.epoch}: train_loss={record.train_loss:.4f} val_loss={record.val_loss:.4f} "
            f"{metrics} ({record.seconds:.1f}s){star}",
            highlight=False,
        )

    def close(self) -> None:
        self.progress.stop()


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("f1_") and k != "frames"}


@app.command("train")
@user_errors
def train_cmd(
    recipe: RecipeOpt,
    out_dir: Annotated[
        Optional[Path], typer.Option("--out", file_okay=False, help="Run folder (default runs/<recipe>).")
    ] = None,
    data: DataOpt = None,
    size: SizeOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    resume: ResumeOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a model from a recipe; the best epoch (by validation metric) is saved as <out>/best.safetensors."""
    from abaw_rt.train.data import load_data
    from abaw_rt.train.loop import train
    from abaw_rt.train.outputs import check_run_folder

    cfg = _config(recipe, data, size, epochs, device, seed, sets, threads)
    out_dir = out_dir or Path("runs") / recipe.stem
    check_run_folder(out_dir, resume)
    with err.status(f"reading {cfg.data.features_dir()} and {cfg.data.annotations_dir('')}"):
        train_data = load_data(cfg)
    err.print(
        f"{cfg.task.value}: {len(train_data.train)} training and {len(train_data.val)} validation label files",
        highlight=False,
    )
    reporter = RichReporter()
    try:
        res = train(cfg, out_dir, resume=resume, reporter=reporter, data=train_data)
    finally:
        reporter.close()
    summary = {
        "best_checkpoint": str(res.best_path),
        "best_epoch": res.best_epoch,
        "epochs": len(res.history),
        "metrics": res.best_metrics,
        "run_folder": str(res.out_dir),
    }
    if as_json:
        out.print_json(data=summary)
        return
    table = Table(title=f"abaw-rt train (recipe {cfg.name or recipe.stem}, task {cfg.task.value})")
    table.add_column("best epoch")
    for k in _headline(res.best_metrics):
        table.add_column(k)
    table.add_column("checkpoint", overflow="fold")
    table.add_row(str(res.best_epoch), *(f"{v:.4f}" for v in _headline(res.best_metrics).values()), str(res.best_path))
    out.print(table)


@app.command("crossval")
@user_errors
def crossval_cmd(
    recipe: RecipeOpt,
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", file_okay=False, help="Folder for fold_1..fold_k (default runs/<recipe>-cv)."),
    ] = None,
    folds: Annotated[Optional[int], typer.Option(min=2, help="Number of folds (recipe: [run] folds, paper 5).")] = None,
    data: DataOpt = None,
    size: SizeOpt = None,
    epochs: EpochsOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    resume: ResumeOpt = False,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """K-fold cross-validation over the recipe's training + validation videos, with a summary table."""
    from abaw_rt.train.crossval import SUMMARY_JSON, crossval
    from abaw_rt.train.data import load_data

    cfg = _config(recipe, data, size, epochs, device, seed, sets, threads)
    if folds is not None:
        cfg = cfg.replace(run={"folds": folds})
    out_dir = out_dir or Path("runs") / f"{recipe.stem}-cv"
    with err.status(f"reading {cfg.data.features_dir()} and {cfg.data.annotations_dir('')}"):
        train_data = load_data(cfg)
    reporters: list[RichReporter] = []

    def reporter_for(k: int) -> RichReporter:
        if reporters:
            reporters[-1].close()
        reporters.append(RichReporter(prefix=f"fold {k}/{cfg.run.folds} "))
        return reporters[-1]

    try:
        result = crossval(cfg, out_dir, resume=resume, reporter_for=reporter_for, data=train_data)
    finally:
        if reporters:
            reporters[-1].close()
    summary = result.summary()
    if as_json:
        out.print_json(data={"summary": str(out_dir / SUMMARY_JSON), **summary})
        return
    keys = list(_headline(summary["aggregate"]))
    table = Table(
        title=f"abaw-rt crossval (recipe {cfg.name or recipe.stem}, task {cfg.task.value}, {cfg.run.folds} folds)"
    )
    for col in ("fold", "best epoch", "train/val files", *keys):
        table.add_column(col)
    for r in summary["folds"]:
        table.add_row(
            str(r["fold"]), str(r["best_epoch"]), f"{r['train_files']}/{r['val_files']}", *(f"{r[k]:.4f}" for k in keys)
        )
    agg = summary["aggregate"]
    table.add_row("mean ± std", "", "", *(f"{agg[k]['mean']:.4f} ± {agg[k]['std']:.4f}" for k in keys))
    out.print(table)
    out.print(f"summary: {out_dir / SUMMARY_JSON}")


@app.command("evaluate")
@user_errors
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="A checkpoint written by abaw-rt train.")],
    data: Annotated[Path, typer.Option("--data", help="Data root holding features/ and annotations/.")],
    split: Annotated[
        Optional[str], typer.Option(help="Annotation split folder (default: the recipe's validation split).")
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0: torch's default).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Score a checkpoint on stored features with the training metrics, per video and pooled (no videos needed)."""
    from abaw_rt.train.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(checkpoint, data, split, threads)
    if as_json:
        out.print_json(data=res)
        return
    keys = ["loss", *_headline(res["pooled"])]
    table = Table(title=f"abaw-rt evaluate ({res['task']}, {res['split']}, {res['videos']} label files)")
    for col in ("video", "frames", *keys):
        table.add_column(col)
    for r in res["per_video"]:
        table.add_row(r["video"], str(r["frames"]), *(f"{r[k]:.4f}" for k in keys))
    table.add_row("pooled", str(sum(r["frames"] for r in res["per_video"])), *(f"{res['pooled'][k]:.4f}" for k in keys))
    out.print(table)


class Dims(str, Enum):
    small = "small"  # narrow features (fast tests and CPU demos)
    paper = "paper"  # the real extractors' widths (1280 / 512)


@app.command("make-synthetic")
@user_errors
def make_synthetic_cmd(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", file_okay=False, help="New folder for the dataset.")],
    videos: Annotated[int, typer.Option(min=2, help="Number of videos.")] = 24,
    val_videos: Annotated[int, typer.Option(min=1, help="Videos in Validation_Set.")] = 6,
    two_person: Annotated[int, typer.Option(min=0, help="Videos with _left/_right label files.")] = 2,
    min_frames: Annotated[int, typer.Option(min=1, help="Shortest video (frames).")] = 300,
    max_frames: Annotated[int, typer.Option(min=1, help="Longest video (frames).")] = 1200,
    dims: Annotated[Dims, typer.Option(help="Feature widths: small, or the paper's extractors'.")] = Dims.small,
    noise: Annotated[float, typer.Option(min=0.0, help="Per-frame feature noise std.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic ABAW-format dataset (feature store + VA/EXPR/AU label files) with a learnable signal."""
    from abaw_rt.train.synthetic import PAPER_DIMS, SMALL_DIMS, SyntheticSpec, make_synthetic

    spec = SyntheticSpec(
        videos=videos,
        val_videos=val_videos,
        two_person=two_person,
        min_frames=min_frames,
        max_frames=max_frames,
        dims=dict(SMALL_DIMS if dims is Dims.small else PAPER_DIMS),
        noise=noise,
        seed=seed,
    )
    s = make_synthetic(out_dir, spec)
    info = {
        "root": str(s.root),
        "features": str(s.features),
        "annotations": {k: str(v) for k, v in s.annotations.items()},
        "train_files": s.train_files,
        "val_files": s.val_files,
        "frames": s.frames,
    }
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(
        f"wrote {s.root}: {videos} videos, {s.frames} frames, {s.train_files} train + {s.val_files} validation "
        f"label files per task"
    )
    out.print(f"train on it: abaw-rt train --recipe training/recipes/va.toml --data {s.root} --size tiny")
