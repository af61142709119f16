"""`abaw-rt infer` on the streaming stages (``stream.offline.VideoRun``: windows run while the video decodes, rows
appended to the output folder as they become final) writes the same bytes as an oracle that holds the whole
video: every frame's features (``Pipeline.features``), the stride plan run at once, ``stitch.Stitcher`` over the
whole video; and as the held path it falls back to on ``Replan``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("onnxruntime")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.pipeline.stream import plan as plan_mod, rows as rows_mod  # noqa: E402

cli = CliRunner()
W, S = 16, 10


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    from tests.reliability import infer_kit

    d = tmp_path_factory.mktemp("feed")
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.export.onnx_export import export_onnx

    k = infer_kit(d, W, S)
    export_onnx(load_checkpoint(k["av"]), onnx_path_for(k["av"], "fp32"))  # the default ort backend
    moving = syn.moving_face(160, 120, 130)
    videos = {
        "gaps": dict(frames=130, faces=lambda i: [] if 20 <= i < 47 or 90 <= i < 93 else moving(i)),
        "late_face": dict(frames=90, faces=lambda i: [] if i < 35 else moving(i)),
        "late_audio": dict(frames=80, audio_start=0.7),
        "vfr": dict(frames=70, vfr=True),
        "window": dict(frames=W),
        "short": dict(frames=W - 5),
        "tail": dict(frames=4 * S + W + 1),
    }
    for name, kw in videos.items():
        syn.write_video(d / f"{name}.mp4", **kw)
    k["videos"] = [d / f"{name}.mp4" for name in videos]
    return k


def _infer(kit, out, *extra, checkpoint="av", backend="ort"):
    args = ["infer", *map(str, kit["videos"]), "--out", str(out), "--extractors", str(kit["spec"]),
            "--detector", str(kit["detector"]), "--checkpoint", str(kit[checkpoint]), "--no-plot", "--backend", backend]
    res = cli.invoke(app, args + list(extra))
    assert res.exit_code == 0, res.output
    return out


def _held(monkeypatch):
    """The first streamed attempt gives up at the end (``Replan``): the video is read again holding every frame."""
    finish = plan_mod.PlanWindows.finish

    def replan_once(self, frame_times, found):
        if not self.rows.hold:
            raise rows_mod.Replan()
        return finish(self, frame_times, found)

    monkeypatch.setattr(plan_mod.PlanWindows, "finish", replan_once)


def _oracle(kit, video, out, batch: int, merge: str = "centre", stride: int | None = None, checkpoint="av",
            backend="ort", detect_every: int = 5):
    """The whole video at once: features of every frame, every window of the plan, ``Stitcher`` over all frames."""
    from abaw_rt.pipeline.extractor_spec import load_detector, load_spec
    from abaw_rt.pipeline.outputs import VideoPrediction, write_outputs
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources, load_fusion
    from abaw_rt.pipeline.segments import plan_segments, run_segments
    from abaw_rt.pipeline.stitch import Merge, Stitcher, decide, to_probabilities

    fusion = load_fusion(kit[checkpoint], None, backend, None, "cpu", None)
    cfg = PipelineConfig(segment_batch=batch, merge=Merge(merge), stride=stride, detect_every=detect_every, plot=False)
    with Pipeline(load_spec(kit["spec"]), cfg, fusion, load_detector(kit["detector"])) as p:
        vf = p.features(collect_sources([video])[0])
        model = p.model_cfg
        inputs = {m: np.concatenate([vf.features[f.name] for f in model.features if f.modality == m], axis=1)
                  for m in model.modalities}
        stitcher = Stitcher(vf.frames, {s.name: s.shape[-1] for s in fusion.output_specs}, Merge(merge))
        for seg, o in run_segments(fusion, inputs, plan_segments(vf.frames, p.window, p.stride), batch):
            stitcher.add(seg.start, {h: to_probabilities(h, v) for h, v in o.items()})
    merged = stitcher.result()
    pred = VideoPrediction(video.stem, video, vf.frame_times, vf.face_found, merged,
                           {h: decide(h, v) for h, v in merged.items()})
    return write_outputs(out, pred, plot=False)


def _same_files(a, b, what):
    names = sorted(f.name for f in a.iterdir() if f.name != "report.json")
    assert names == sorted(f.name for f in b.iterdir() if f.name != "report.json"), what
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), (what, name)


@pytest.mark.parametrize("extra", [
    ("--batch", "1"), ("--batch", "2", "--detect-every", "3"), ("--batch", "3", "--merge", "none"),
    ("--batch", "2", "--merge", "uniform", "--stride", "7"), ("--batch", "8"),
])
def test_streamed_windows_write_what_the_whole_video_gives(kit, tmp_path, monkeypatch, extra):
    streamed = _infer(kit, tmp_path / "streamed", *extra)
    opts = dict(zip(extra[::2], extra[1::2]))
    for v in kit["videos"]:
        oracle = _oracle(kit, v, tmp_path / "oracle", int(opts["--batch"]), opts.get("--merge", "centre"),
                         int(opts["--stride"]) if "--stride" in opts else None,
                         detect_every=int(opts.get("--detect-every", 5)))
        _same_files(streamed / v.stem, oracle, (v.stem, extra))
    with monkeypatch.context() as m:
        _held(m)
        held = _infer(kit, tmp_path / "held", *extra)
    for v in kit["videos"]:
        _same_files(streamed / v.stem, held / v.stem, (v.stem, extra, "held"))


def test_visual_only_model_streams_the_same(kit, tmp_path):
    streamed = _infer(kit, tmp_path / "streamed", "--batch", "1", checkpoint="vis", backend="torch")
    for v in kit["videos"]:
        oracle = _oracle(kit, v, tmp_path / "oracle", 1, checkpoint="vis", backend="torch")
        _same_files(streamed / v.stem, oracle, v.stem)


def test_rows_drop_and_grow():
    r = rows_mod.Rows(2)
    r.append(np.arange(600, dtype=np.float32).reshape(300, 2))
    r.drop(250)
    r.append(np.full((400, 2), -1, np.float32))
    assert (r.base, r.end) == (250, 700)
    assert r.take(np.array([250, 299, 300]))[:, 0].tolist() == [500.0, 598.0, -1.0]


def test_rows_never_put_read_as_zeros_after_a_drop():
    """Frames without a face get no row: after a drop, what lay beyond the end must not show through."""
    r = rows_mod.Rows(1)
    r.append(np.arange(1, 301, dtype=np.float32)[:, None])
    r.drop(290)
    r.put(np.array([305]), np.array([[7.0]], np.float32))  # frames 300..304: no face
    assert r.take(np.arange(298, 306))[:, 0].tolist() == [299.0, 300.0, 0, 0, 0, 0, 0, 7.0]
