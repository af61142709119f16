"""`abaw-rt infer` running fusion windows while it decodes (``window_feed.WindowFeed``) writes the same bytes as the
whole-video path (features of every frame, then ``predict.predict_windows``), which it falls back to on ``Replan``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("onnxruntime")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from abaw_rt.pipeline import window_feed  # noqa: E402

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


def _whole_video(monkeypatch):
    def replan(self, *a, **k):
        raise window_feed.Replan()

    monkeypatch.setattr(window_feed.WindowFeed, "finish", replan)


@pytest.mark.parametrize("extra", [
    ("--batch", "1"), ("--batch", "2", "--detect-every", "3"), ("--batch", "3", "--merge", "none"),
    ("--batch", "2", "--merge", "uniform", "--stride", "7"), ("--batch", "8"),
])
def test_streamed_windows_write_the_same_bytes(kit, tmp_path, monkeypatch, extra):
    streamed = _infer(kit, tmp_path / "streamed", *extra)
    with monkeypatch.context() as m:
        _whole_video(m)
        whole = _infer(kit, tmp_path / "whole", *extra)
    for v in kit["videos"]:
        for f in sorted((whole / v.stem).iterdir()):
            if f.name != "report.json":
                assert (streamed / v.stem / f.name).read_bytes() == f.read_bytes(), (v.stem, f.name, extra)


def test_visual_only_model_streams_the_same(kit, tmp_path, monkeypatch):
    streamed = _infer(kit, tmp_path / "streamed", "--batch", "1", checkpoint="vis", backend="torch")
    with monkeypatch.context() as m:
        _whole_video(m)
        whole = _infer(kit, tmp_path / "whole", "--batch", "1", checkpoint="vis", backend="torch")
    for v in kit["videos"]:
        for f in sorted((whole / v.stem).iterdir()):
            if f.name != "report.json":
                assert (streamed / v.stem / f.name).read_bytes() == f.read_bytes(), (v.stem, f.name)


def test_rows_drop_and_grow():
    r = window_feed.Rows(2)
    r.append(np.arange(600, dtype=np.float32).reshape(300, 2))
    r.drop(250)
    r.append(np.full((400, 2), -1, np.float32))
    assert (r.base, r.end) == (250, 700)
    assert r.take(np.array([250, 299, 300]))[:, 0].tolist() == [500.0, 598.0, -1.0]
