"""`abaw-rt infer` end to end on generated videos: outputs, faces, audio, backends, and every bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("torch")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.model.config import HEAD_LABELS, TINY, FeatureGroup, ModelConfig  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402

cli = CliRunner()
N = 40  # frames of the main test video
W, S = 16, 10  # segment window and stride of the test checkpoints


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    from abaw_rt.checkpoint import init_checkpoint
    from tests.reliability import infer_kit

    d = tmp_path_factory.mktemp("infer")
    k = infer_kit(d, W, S)
    bad_cfg = ModelConfig(features=(FeatureGroup("vis0", 9, "visual"),), heads=("va",), **TINY)
    k["wrong_dim"] = init_checkpoint(d / "wrong.safetensors", bad_cfg, window=W, stride=S)
    v = d / "videos"
    v.mkdir()
    syn.write_video(v / "main.mp4", frames=N)
    syn.write_video(v / "vfr.mp4", frames=25, vfr=True)
    moving = syn.moving_face(160, 120, N)
    syn.write_video(v / "gap.mp4", frames=N, faces=lambda i: [] if 10 <= i < 20 else moving(i))
    syn.write_video(v / "noface.mp4", frames=12, faces=lambda i: [])
    syn.write_video(v / "silent.mp4", frames=N, audio=False)
    syn.write_video(v / "one.mp4", frames=1)
    return k


def infer(kit, videos, out, *extra, checkpoint="av", backend="torch"):
    args = ["infer", *map(str, videos), "--out", str(out), "--extractors", str(kit["spec"])]
    args += ["--detector", str(kit["detector"])]
    if backend:
        args += ["--backend", backend]
    if checkpoint:
        args += ["--checkpoint", str(kit[checkpoint])]
    return cli.invoke(app, args + [str(x) for x in extra])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    msg = res.stderr.strip()
    assert msg.startswith("error:") and len(msg.splitlines()) == 1, msg
    for n in needles:
        assert n in msg, msg


def assert_no_outputs(out: Path):
    assert not out.exists() or list(out.iterdir()) == [], sorted(out.iterdir())


def test_infer_writes_every_output(kit, tmp_path):
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4"], out, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["videos"][0]
    folder = out / "main"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["main.VA.txt", "main.EXPR.txt", "main.AU.txt", "predictions.csv", "report.json", "plot.png"]
    )
    va = (folder / "main.VA.txt").read_text().splitlines()
    assert va[0] == "valence,arousal" and len(va) == N + 1
    assert all(-1 <= float(x) <= 1 for line in va[1:] for x in line.split(","))
    expr = (folder / "main.EXPR.txt").read_text().splitlines()
    assert expr[0] == ",".join(HEAD_LABELS["expr"]) and all(0 <= int(x) <= 7 for x in expr[1:])
    au = (folder / "main.AU.txt").read_text().splitlines()
    assert au[0].split(",") == list(HEAD_LABELS["au"]) and all(set(line.split(",")) <= {"0", "1"} for line in au[1:])
    rows = read_csv(folder / "predictions.csv")
    assert len(rows) == N and rows[0]["frame"] == "1" and float(rows[1]["time"]) == pytest.approx(0.04)
    assert all(r["face_found"] == "1" for r in rows)
    probs = np.array([[float(r[f"p_{x}"]) for x in HEAD_LABELS["expr"]] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [HEAD_LABELS["expr"].index(r["expr"]) for r in rows] == [int(x) for x in expr[1:]]
    assert (folder / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk["frames"] == report["frames"] == N
    assert report["segments"] == {"window": W, "stride": S, "count": 4, "merge": "centre", "batch": 8}
    for stage in ("decode", "detect", "align", "extract:vis0", "extract:aud", "fusion", "stitch"):
        s = report["stages"][stage]
        assert s["calls"] >= 1 and s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
    assert report["faces"]["detections"] == len(range(0, N, 5)) + 1  # every 5th frame and the last
    assert report["audio"]["frame_coverage"] == 1.0
    assert report["realtime_factor"] > 0 and report["model"]["backend"] == "torch"
    assert {"abaw-rt", "av", "onnxruntime", "numpy"} <= set(report["environment"]["versions"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_summary_table_and_several_videos_in_one_call(kit, tmp_path):
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4", kit["dir"] / "videos" / "vfr.mp4"], out)
    assert res.exit_code == 0, res.output
    assert "main" in res.stdout and "vfr" in res.stdout and "per-stage time" in res.stdout
    rows = read_csv(out / "vfr" / "predictions.csv")
    times = [float(r["time"]) for r in rows]
    np.testing.assert_allclose(times[:4], [0.0, 0.04, 0.12, 0.16], atol=1e-4)  # VFR timestamps kept


def test_folder_input_and_rerun_replaces_outputs_whole(kit, tmp_path):
    vids = tmp_path / "vids"
    vids.mkdir()
    for name in ("main.mp4", "one.mp4"):
        (vids / name).write_bytes((kit["dir"] / "videos" / name).read_bytes())
    out = tmp_path / "out"
    assert infer(kit, [vids], out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["main", "one"]
    (out / "one" / "stale.txt").write_text("from an older run")
    assert infer(kit, [vids / "one.mp4"], out, "--no-plot").exit_code == 0
    assert sorted(p.name for p in (out / "one").iterdir()) == [
        "one.AU.txt",
        "one.EXPR.txt",
        "one.VA.txt",
        "predictions.csv",
        "report.json",
    ]


def test_one_frame_video(kit, tmp_path):
    res = infer(kit, [kit["dir"] / "videos" / "one.mp4"], tmp_path / "out", "--json")
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "out" / "one" / "one.VA.txt").read_text().splitlines()) == 2
    assert json.loads(res.stdout)["videos"][0]["segments"]["count"] == 1


def test_missing_faces_are_filled_from_the_nearest_and_flagged(kit, tmp_path):
    res = infer(kit, [kit["dir"] / "videos" / "gap.mp4"], tmp_path / "out", "--detect-every", "1", "--json")
    assert res.exit_code == 0, res.output
    rows = read_csv(tmp_path / "out" / "gap" / "predictions.csv")
    assert [r["face_found"] for r in rows] == ["1"] * 10 + ["0"] * 10 + ["1"] * 20
    faces = json.loads(res.stdout)["videos"][0]["faces"]
    assert faces["found"] == 30 and faces["missing"] == 10 and faces["detections"] == N


def test_missing_face_features_take_the_nearest_frame(kit):
    from abaw_rt.pipeline.extractor_spec import load_detector, load_spec
    from abaw_rt.pipeline.run import Pipeline, PipelineConfig, collect_sources

    spec, det = load_spec(kit["spec"]), load_detector(kit["detector"])
    (src,) = collect_sources([kit["dir"] / "videos" / "gap.mp4"])
    with Pipeline(spec, PipelineConfig(detect_every=1), None, det) as p:
        raw = p.features(src, fill=False)
        filled = p.features(src)
    x, y = raw.features["vis0"], filled.features["vis0"]
    assert np.all(x[10:20] == 0) and np.all(np.abs(x[:10]).sum(1) > 0)
    np.testing.assert_array_equal(y[10:15], np.repeat(x[9:10], 5, 0))  # nearest earlier face (ties: earlier)
    np.testing.assert_array_equal(y[15:20], np.repeat(x[20:21], 5, 0))
    np.testing.assert_array_equal(y[:10], x[:10])
    assert len(np.unique(x[:10].round(5), axis=0)) > 1  # features follow the frames (the face tone changes)


def test_no_face_anywhere_is_an_error_without_outputs(kit, tmp_path):
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "noface.mp4"], out)
    assert_one_line_error(res, "noface.mp4", "no face found in any of its 12 frames")
    assert_no_outputs(out)


def test_left_and_right_faces_name_their_outputs(kit, tmp_path):
    two = tmp_path / "two.mp4"
    syn.write_video(two, frames=10, faces=lambda i: [(10, 40, 50, 80, 140), (100, 30, 150, 80, 250)])
    # the detector's input is 128 x 96: the 160 x 120 frame is scaled by 0.8
    det = syn.fixed_detector(tmp_path / "two.onnx", [(8, 32, 40, 64, 0.9), (80, 24, 120, 64, 0.9)])
    out = tmp_path / "out"
    for side in ("left", "right"):
        res = infer(kit, [two], out, "--face", side, "--json", "--no-plot", "--detector", det)
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["two_left", "two_right"]
    left = read_csv(out / "two_left" / "predictions.csv")
    right = read_csv(out / "two_right" / "predictions.csv")
    assert [r["valence"] for r in left] != [r["valence"] for r in right]  # different faces, different features
    res = infer(kit, [two], out, "--json", "--no-plot", "--detector", det)
    largest = read_csv(out / "two" / "predictions.csv")
    assert [r["valence"] for r in largest] == [r["valence"] for r in right]


def test_visual_only_model_runs_on_a_video_without_audio(kit, tmp_path):
    res = infer(kit, [kit["dir"] / "videos" / "silent.mp4"], tmp_path / "out", "--json", checkpoint="vis")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["videos"][0]
    assert report["audio"]["used"] is False
    assert sorted(p.name for p in (tmp_path / "out" / "silent").iterdir())[0] == "plot.png"
    assert (tmp_path / "out" / "silent" / "silent.EXPR.txt").is_file()


def test_audio_model_on_a_video_without_audio_is_refused_before_decoding(kit, tmp_path):
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4", kit["dir"] / "videos" / "silent.mp4"], out)
    assert_one_line_error(res, "silent.mp4", "has no audio track", "'aud'")
    assert_no_outputs(out)  # main.mp4 was not processed either: inputs are checked first


def test_checkpoint_extractor_mismatch_is_refused_before_decoding(kit, tmp_path, monkeypatch):
    import abaw_rt.pipeline.decode as decode

    def no_decoding(*a, **k):
        raise AssertionError("decoded before checking the extractors")

    monkeypatch.setattr(decode, "probe", no_decoding)
    monkeypatch.setattr(decode.VideoDecoder, "frames", no_decoding)
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4"], out, checkpoint="wrong_dim")
    assert_one_line_error(res, "extractor 'vis0'", "dim 8", "needs visual, dim 9")
    spec = tmp_path / "only_audio.toml"
    syn.write_spec(
        spec,
        [{"name": "aud", "modality": "audio", "onnx": str(kit["dir"] / "kit" / "aud.onnx"), "dim": 4, "window": 1600}],
    )
    res = cli.invoke(
        app,
        [
            "infer",
            str(kit["dir"] / "videos" / "main.mp4"),
            "--checkpoint",
            str(kit["av"]),
            "--backend",
            "torch",
            "--extractors",
            str(spec),
            "--out",
            str(out),
        ],
    )
    assert_one_line_error(res, "needs feature 'vis0'", "has no extractor of that name", "only_audio.toml")
    assert_no_outputs(out)


@pytest.mark.parametrize(
    "setup, needles",
    [
        (lambda d: d / "missing.mp4", ["missing.mp4", "no such file"]),
        (lambda d: _write(d / "notes.mp4", b"just some text\n"), ["notes.mp4", "not a readable video"]),
        (lambda d: _write(d / "cut.mp4", None), ["cut.mp4", "not a readable video"]),
    ],
)
def test_bad_videos_fail_in_one_line_without_outputs(kit, tmp_path, setup, needles):
    path = setup(tmp_path)
    if path.name == "cut.mp4":
        path.write_bytes((kit["dir"] / "videos" / "main.mp4").read_bytes()[:6000])
    out = tmp_path / "out"
    res = infer(kit, [path], out)
    assert_one_line_error(res, *needles)
    assert_no_outputs(out)


def _write(path: Path, data: bytes | None) -> Path:
    if data is not None:
        path.write_bytes(data)
    return path


def test_zero_frame_and_truncated_videos_leave_no_outputs(kit, tmp_path):
    from tests.reliability import truncated_faststart, zero_frame_video

    out = tmp_path / "out"
    zero = zero_frame_video(tmp_path / "zero.mkv")
    assert_one_line_error(infer(kit, [zero], out, checkpoint="vis"), "zero.mkv", "no decodable video frames")
    half = truncated_faststart(tmp_path / "half.mp4", tmp_path)
    assert_one_line_error(infer(kit, [half], out, checkpoint="vis"), "half.mp4", "truncated or corrupt")
    assert_no_outputs(out)


def test_unwritable_output_folder(kit, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should go")
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4"], blocker / "out")
    assert_one_line_error(res, "output folder", "not writable")


def test_missing_model_spec_or_detector_are_clear(kit, tmp_path):
    video = str(kit["dir"] / "videos" / "main.mp4")
    # no --checkpoint: the built-in demo model, which needs the default extractors (fer, logmel)
    res = cli.invoke(app, ["infer", video, "--extractors", str(kit["spec"]), "--detector", str(kit["detector"])])
    assert_one_line_error(res, "needs feature 'fer'", "has no extractor")
    # no --extractors: the built-in spec, which lacks this checkpoint's extractors
    res = cli.invoke(app, ["infer", video, "--checkpoint", str(kit["av"]), "--backend", "torch"])
    assert_one_line_error(res, "needs feature 'vis0'", "extractors.toml")
    # a spec without [detector] and no --detector: the built-in RetinaFace (it finds the drawn faces too)
    res = cli.invoke(
        app,
        [
            "infer",
            video,
            "--checkpoint",
            str(kit["av"]),
            "--backend",
            "torch",
            "--extractors",
            str(kit["spec"]),
            "--out",
            str(tmp_path / "builtin_detector"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["videos"][0]["detector"].endswith("retinaface_mnet025.onnx")
    res = infer(kit, [video], tmp_path / "o", "--merge", "sideways")
    assert res.exit_code == 2 and "sideways" in res.output
    res = cli.invoke(
        app,
        [
            "infer",
            video,
            "--checkpoint",
            str(kit["av"]),
            "--extractors",
            str(kit["spec"]),
            "--detector",
            str(kit["detector"]),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert_one_line_error(res, "no exported fp32 graph", "abaw-rt export")
    assert_no_outputs(tmp_path / "o")


def test_interrupt_while_writing_leaves_no_partial_output(kit, tmp_path, monkeypatch):
    import abaw_rt.pipeline.plot as plot

    def interrupted(pred):
        raise KeyboardInterrupt

    monkeypatch.setattr(plot, "plot_png", interrupted)  # the VA/EXPR/AU files and the CSV are already staged
    out = tmp_path / "out"
    res = infer(kit, [kit["dir"] / "videos" / "main.mp4"], out)
    assert res.exit_code == 130
    assert_no_outputs(out)


def test_ort_backend_matches_torch(kit, tmp_path):
    """The exported graph through the pipeline gives the torch backend's predictions (one export, ~10 s)."""
    from abaw_rt.checkpoint import load_checkpoint
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx

    ckpt = tmp_path / "av.safetensors"  # a copy, so that the shared checkpoint stays without an export
    ckpt.write_bytes(kit["av"].read_bytes())
    graph = export_onnx(load_checkpoint(ckpt), onnx_path_for(ckpt, "fp32")).path
    video = kit["dir"] / "videos" / "main.mp4"
    assert infer(kit, [video], tmp_path / "torch").exit_code == 0
    res = infer(kit, [video], tmp_path / "ort", "--model", graph, "--json", checkpoint=None, backend=None)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["videos"][0]["model"]["backend"] == "ort"
    # --checkpoint with the default backend finds the graph exported beside it
    res = infer(kit, [video], tmp_path / "ort2", "--checkpoint", ckpt, "--json", checkpoint=None, backend=None)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["videos"][0]["model"]["artefact"] == str(graph)
    a = read_csv(tmp_path / "torch" / "main" / "predictions.csv")
    cols = ["valence", "arousal"] + [f"p_{x}" for x in HEAD_LABELS["expr"] + HEAD_LABELS["au"]]
    for other in ("ort", "ort2"):
        b = read_csv(tmp_path / other / "main" / "predictions.csv")
        np.testing.assert_allclose(
            [[float(r[c]) for c in cols] for r in a], [[float(r[c]) for c in cols] for r in b], atol=1e-4
        )
    res = cli.invoke(
        app,
        [
            "infer",
            str(video),
            "--model",
            str(graph),
            "--backend",
            "torch",
            "--extractors",
            str(kit["spec"]),
            "--detector",
            str(kit["detector"]),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert_one_line_error(res, "runs with --backend ort")
