"""Many videos over a local Ray cluster (``ray.init(num_cpus=2)``): outputs equal a single-process run's, a worker
killed mid-video is replaced and its video tried again, a video that fails every try is reported and leaves nothing.

The kills come from ``ScaleConfig.fault_hook``, called in the worker on each progress step: it SIGKILLs its own
process, as an out-of-memory kill or a lost node would.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app
from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.jobs import FusionChoice, JobRunner, VideoJob
from abaw_rt.pipeline.run import PipelineConfig, collect_sources
from abaw_rt.scale.config import ScaleConfig

cli = CliRunner()
MEASURED = ("wall_s", "frames_per_s", "model_load_s", "peak_rss_mb", "environment", "stages", "realtime_factor",
            "outputs")  # report.json keys that time or place a run; everything else must match


def kill_self(marker_dir: str, video: str, always: bool, name: str, done: int) -> None:
    """Fault hook: SIGKILL this worker on ``video`` after a few frames (once, or on every try)."""
    if name != video or done < 5:
        return
    marker = Path(marker_dir) / f"killed-{video}-{os.getpid()}"
    if not always and any(Path(marker_dir).glob(f"killed-{video}-*")):
        return
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("av")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    from abaw_rt.defaults.sample import make_sample_video

    folder = tmp_path_factory.mktemp("videos")
    return [make_sample_video(folder / f"{n}.mp4", seconds=1.6, seed=i) for i, n in enumerate("abc")]


def _job(out: Path, infer: bool = True) -> VideoJob:
    config = PipelineConfig(infer_threads=1, decode_threads=1)
    return VideoJob(out, config, FusionChoice(threads=1) if infer else None)


def _single(job: VideoJob, videos) -> None:
    runner = JobRunner(job)
    sources = collect_sources(videos)
    runner.check(sources)
    with runner:
        for s in sources:
            runner.run(s)


def _on_ray(job: VideoJob, videos, **cfg):
    from abaw_rt.scale.ray_run import run_videos

    runner = JobRunner(job)
    sources = collect_sources(videos)
    runner.check(sources)
    return run_videos(job, sources, {}, ScaleConfig(workers=2, **cfg))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _same_outputs(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name.endswith("report.json"):
            ra, rb = (json.loads(f[name]) for f in (fa, fb))
            assert {k: v for k, v in ra.items() if k not in MEASURED} == {k: v for k, v in rb.items() if k not in MEASURED}
        else:
            assert fa[name] == fb[name], name


@pytest.fixture(scope="module")
def single_out(tmp_path_factory, videos) -> Path:
    out = tmp_path_factory.mktemp("single")
    _single(_job(out), videos)
    return out


def test_ray_outputs_equal_the_single_process_run(ray_cluster, videos, single_out, tmp_path):
    result = _on_ray(_job(tmp_path / "ray"), videos)
    assert not result.failures and result.retries == 0
    assert [r["name"] for r in result.reports] == ["a", "b", "c"]
    assert len(set(result.worker_pids)) == 2 and os.getpid() not in result.worker_pids
    _same_outputs(single_out, tmp_path / "ray")


def test_a_killed_worker_is_replaced_and_its_video_retried(ray_cluster, videos, single_out, tmp_path):
    hook = functools.partial(kill_self, str(tmp_path), "b", False)
    result = _on_ray(_job(tmp_path / "ray"), videos, fault_hook=hook, max_retries=1)
    assert len(list(tmp_path.glob("killed-b-*"))) == 1  # the hook did kill a worker
    assert not result.failures and result.retries == 1
    assert len(set(result.worker_pids)) == 3  # the dead worker's replacement
    _same_outputs(single_out, tmp_path / "ray")  # complete, and no staging folder left behind


def test_a_video_that_fails_every_try_is_reported_and_leaves_nothing(ray_cluster, videos, single_out, tmp_path):
    hook = functools.partial(kill_self, str(tmp_path), "c", True)
    result = _on_ray(_job(tmp_path / "ray"), videos, fault_hook=hook, max_retries=1)
    assert [(f.name, f.tries) for f in result.failures] == [("c", 2)]
    assert "worker died" in result.failures[0].reason
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["a", "b"]  # no c, no hidden leftovers
    assert _files(tmp_path / "ray").keys() == {k for k in _files(single_out) if not k.startswith("c/")}


@pytest.mark.slow
def test_extract_on_ray_writes_the_same_store(ray_cluster, videos, tmp_path):
    _single(_job(tmp_path / "one", infer=False), videos)
    hook = functools.partial(kill_self, str(tmp_path), "c", True)
    result = _on_ray(_job(tmp_path / "ray", infer=False), videos, fault_hook=hook, max_retries=0)
    assert [f.name for f in result.failures] == ["c"]
    one, ray = _files(tmp_path / "one"), _files(tmp_path / "ray")
    assert {k: v for k, v in one.items() if "/c.npy" not in k and k != "store.json"} == {
        k: v for k, v in ray.items() if k != "store.json"}  # c's files gone, nothing half-written
    index = json.loads(ray["store.json"])
    assert sorted(index["videos"]) == ["a", "b"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ray", "local", "--workers", "0"], "--workers 0: expected at least 1"),
        (["--workers", "2"], "--workers 2: needs --ray"),
        (["--ray", "127.0.0.1:1"], "--ray '127.0.0.1:1': unreachable"),
        (["--ray", "not an address"], "expected local, auto, ray://host:port or host:port"),
    ],
)
def test_bad_cluster_options_are_one_line_exit_2(videos, tmp_path, args, message):
    for verb in ("infer", "extract"):
        r = cli.invoke(app, [verb, str(videos[0]), "--out", str(tmp_path / verb), *args])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1
        assert not (tmp_path / verb).exists()


def test_a_cluster_too_small_for_the_workers_is_refused():
    from abaw_rt.scale.ray_run import check_resources

    check_resources({"CPU": 2.0}, ScaleConfig(workers=2), 2)
    with pytest.raises(AbawRtError, match="--workers: 3 worker.* need 3 CPUs, the Ray cluster at 'local' has 2"):
        check_resources({"CPU": 2.0}, ScaleConfig(workers=3), 3)
    with pytest.raises(AbawRtError, match="--gpus-per-worker: .* has 0"):
        check_resources({"CPU": 8.0}, ScaleConfig(workers=2, gpus_per_worker=0.5), 2)


def test_cli_refuses_more_workers_than_the_cluster_holds(ray_cluster, videos, tmp_path):
    r = cli.invoke(app, ["infer", *map(str, videos), "--out", str(tmp_path / "o"), "--ray", "local", "--workers", "3"])
    assert r.exit_code == 2 and "need 3 CPUs, the Ray cluster at 'local' has 2" in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    import sys

    from abaw_rt.scale.ray_run import connect

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AbawRtError, match=r"\[ray\]"):
        connect(ScaleConfig())


@pytest.mark.slow
def test_cli_ray_run_summarises_failures_and_exits_1(ray_cluster, videos, tmp_path, monkeypatch):
    """The CLI joins the running cluster; a video that fails every try is listed, the others are written, exit 1."""
    import dataclasses

    from abaw_rt.cli import infer_cmds

    hook = functools.partial(kill_self, str(tmp_path), "b", True)
    make = infer_cmds._scale_config
    monkeypatch.setattr(infer_cmds, "_scale_config", lambda *a: dataclasses.replace(make(*a), fault_hook=hook))
    r = cli.invoke(app, ["infer", *map(str, videos), "--out", str(tmp_path / "o"), "--ray", "local",
                         "--max-retries", "0", "--threads", "1", "--json"])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)  # stdout stays JSON
    assert [v["name"] for v in data["videos"]] == ["a", "c"]
    assert [(f["name"], f["tries"]) for f in data["ray"]["failures"]] == [("b", 1)]
    assert "1 input(s) failed" in r.stderr
    assert "a: done in" in r.stderr and "b: FAILED" in r.stderr  # plain progress lines off a terminal
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a", "c"]
