"""CLI layer: ``infer`` / ``extract`` with ``--ray``: one progress bar over every worker, failures summarised."""

from __future__ import annotations

import contextlib
import sys

from rich.table import Table

from abaw_rt.cli import err, warn_lost_frames


def _expected_frames(infos) -> dict:
    from abaw_rt.cli.infer_cmds import _expected

    return {name: _expected(info) for name, info in infos.items()}


def run_scaled(runner, sources, scale):
    """Run a job over Ray: sources probed, then the cluster joined (or started) and checked, then the output
    folder made, so that a refusal leaves nothing; returns (reports, model load s, the run's record)."""
    from abaw_rt.scale.ray_run import cluster

    infos = runner.check_sources(sources)
    with contextlib.redirect_stdout(sys.stderr):  # Ray's own notices (a worker died) stay off --json stdout
        with cluster(scale, min(scale.workers, max(len(sources), 1))) as (_, startup_s):
            runner.check_output()
            reports, load_s, record = _run(runner.job, sources, infos, scale)
    record["startup_s"] = startup_s
    return reports, load_s, record


def _run(job, sources, infos, scale):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from abaw_rt.scale.ray_run import run_videos

    expected = _expected_frames(infos)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    tasks: dict[str, int] = {}
    count = [0]

    def on_progress(snapshot) -> None:
        for name, (done, total) in snapshot.items():
            if name in tasks:
                bar.update(tasks[name], completed=done, total=total)

    def on_done(name, report, error) -> None:
        count[0] += 1
        if name in tasks:
            bar.remove_task(tasks.pop(name))
        bar.advance(overall)
        if report is not None:
            warn_lost_frames(report)
        if not err.is_terminal:  # plain lines in a log
            what = f"done in {report['wall_s']:.1f} s" if report is not None else f"FAILED: {error}"
            err.print(f"[{count[0]}/{len(sources)}] {name}: {what}", highlight=False, soft_wrap=True)

    with bar:
        overall = bar.add_task(f"{len(sources)} inputs on {scale.workers} Ray workers", total=len(sources))
        for s in sources:
            tasks[s.name] = bar.add_task(f"  {s.name}", total=expected.get(s.name))
        result = run_videos(job, sources, expected, scale, on_progress, on_done)
    return result.reports, result.load_s, result.to_dict()


def print_failures(record: dict) -> None:
    """The inputs that produced nothing, one row each, on stderr."""
    table = Table(title=f"{len(record['failures'])} input(s) failed (no output written for them)")
    for col in ("input", "tries", "why"):
        table.add_column(col, overflow="fold")
    for f in record["failures"]:
        table.add_row(f["name"], str(f["tries"]), f["reason"])
    err.print(table)
